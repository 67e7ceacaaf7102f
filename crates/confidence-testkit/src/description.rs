//! Resolver states from JSON descriptions of flags (camelCase keys). The result is encoded as
//! the CDN serves it unencrypted: pass it as `initialState` of an offline provider.
//!
//! ```text
//! {
//!   clientSecret?: string            // default "test-client-secret"
//!   accountId?: string               // default "test-account"
//!   flags?: { [name: string]: {      // name: lowercase letters, digits, '-' (a resource id)
//!     variants?: { [id: string]: object }  // each variant's value (ids: like flag names)
//!     schema?: { [field: string]: "boolean" | "string" | "integer" | "number" | "object" | "list" | {nested} }
//!                                     // default: inferred from the variants (union of their fields)
//!     rules?: Rule[]                  // first match wins; no match: the caller's default value
//!     archived?: boolean              // archived flags are never resolved
//!     description?: string
//!   } }
//! }
//! Rule = {
//!   name?: string                     // default "rule-<index>"
//!   variant?: string                  // everyone matched gets this variant, or
//!   split?: { [variant: string]: number }  // relative weights, bucketed by the targeting key
//!   when?: Condition                  // default: everyone
//!   rollout?: number                  // (0, 1]: share of units admitted (needs a targeting key)
//!   targetingKey?: string             // context path of the unit, default "targeting_key"
//!   sticky?: string                   // materialization keeping assignments sticky
//! }
//! Condition = { attribute: "a.b", equals: string | number | boolean }
//!   | { attribute, in: [scalars of one type] }
//!   | { attribute, gt?, gte?, lt?, lte?: number }
//!   | { attribute, versionGt?, versionGte?, versionLt?, versionLte?: "1.2.3" }
//!   | { attribute, after?, before?: "2026-01-01T00:00:00Z" }  // exclusive bounds
//!   | { all: Condition[] } | { any: Condition[] } | { not: Condition }
//! ```
//!
//! Conditions mean exactly what Confidence's resolver makes of them: a missing attribute matches
//! no operator, and a numeric condition meeting a context string that is not a number fails the
//! whole resolve.
//!
//! An invalid description is a [`DescriptionError`] naming the path of the problem, e.g.
//! `flags["new-ui"].rules[1].split: unknown variant "blue" (variants: off, on)`.

use std::collections::BTreeMap;
use std::fmt;

use confidence_resolver::proto::confidence::flags::types::v1::{flag_schema::StructFlagSchema, Expression, FlagSchema};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use state_builder::hash::murmur3;
use state_builder::time::parse_rfc3339;
use state_builder::{
    attr, eq, expr, one_of, range, s_bool, s_double, s_int, s_list, s_string, s_struct, struct_schema, t_bool, t_num,
    t_str, t_ts, t_version, Bitset, Bound, BuiltState, ClientBuilder, Criterion, FlagBuilder, Materialization, Op,
    RuleBuilder, SegmentBuilder, StateBuilder, TValue,
};

use crate::{DEFAULT_ACCOUNT, DEFAULT_CLIENT_SECRET, TEST_CLIENT};

// ---------------------------------------------------------------------------------------------
// Descriptions

/// A description problem, located by a JavaScript-like path (`flags["x"].rules[0].when`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DescriptionError {
    pub path: String,
    pub message: String,
}

/// Where in the description we are; only used to name problems.
#[derive(Clone, Debug)]
struct Path(String);

impl Path {
    fn root() -> Self {
        Path(String::new())
    }

    fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{name}", self.0))
        }
    }

    fn key(&self, key: &str) -> Self {
        Path(format!("{}[{key:?}]", self.0))
    }

    fn index(&self, i: usize) -> Self {
        Path(format!("{}[{i}]", self.0))
    }

    fn error(&self, message: impl fmt::Display) -> DescriptionError {
        let path = if self.0.is_empty() { "description".to_string() } else { self.0.clone() };
        DescriptionError { path, message: message.to_string() }
    }
}

type Parsed<T> = std::result::Result<T, DescriptionError>;

/// Decodes one object level. On failure each field is tried alone, so a wrongly typed field is
/// reported at its own path (serde's messages do not say which field they are about). Every
/// document struct defaults all fields, which is what makes the one-field retry meaningful.
fn parse<T: DeserializeOwned>(value: &Json, path: &Path) -> Parsed<T> {
    let Json::Object(fields) = value else {
        return Err(path.error(format!("expected an object, got {}", kind_of(value))));
    };
    serde_json::from_value(value.clone()).map_err(|whole| {
        for (name, field) in fields {
            let alone = Json::Object(Map::from_iter([(name.clone(), field.clone())]));
            if let Err(e) = serde_json::from_value::<T>(alone) {
                let message = e.to_string();
                return if message.starts_with("unknown field") {
                    path.error(message)
                } else {
                    path.field(name).error(message)
                };
            }
        }
        path.error(whole)
    })
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct DescriptionDoc {
    client_secret: Option<String>,
    account_id: Option<String>,
    flags: Map<String, Json>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct FlagDoc {
    variants: Map<String, Json>,
    schema: Option<Map<String, Json>>,
    rules: Vec<Json>,
    archived: bool,
    description: String,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct RuleDoc {
    name: Option<String>,
    variant: Option<String>,
    split: Option<Map<String, Json>>,
    when: Option<Json>,
    rollout: Option<f64>,
    targeting_key: Option<String>,
    sticky: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ConditionDoc {
    attribute: Option<String>,
    equals: Option<Json>,
    #[serde(rename = "in")]
    one_of: Option<Vec<Json>>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
    version_gt: Option<String>,
    version_gte: Option<String>,
    version_lt: Option<String>,
    version_lte: Option<String>,
    after: Option<String>,
    before: Option<String>,
    all: Option<Vec<Json>>,
    any: Option<Vec<Json>>,
    not: Option<Json>,
}

/// Compiles a description (its shape is in the module documentation) into a state.
pub fn state_from_description(description_json: &str) -> Parsed<BuiltState> {
    let root = Path::root();
    let json: Json = serde_json::from_str(description_json).map_err(|e| root.error(format!("not valid JSON: {e}")))?;
    let doc: DescriptionDoc = parse(&json, &root)?;
    let secret = doc.client_secret.unwrap_or_else(|| DEFAULT_CLIENT_SECRET.to_string());
    if secret.is_empty() {
        return Err(root.field("clientSecret").error("must not be empty"));
    }
    let account = doc.account_id.unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
    if account.is_empty() || account.contains('/') {
        return Err(root.field("accountId").error("must be a non-empty id without '/'"));
    }
    let mut state = StateBuilder::new(account).client(ClientBuilder::new(TEST_CLIENT).secret(secret));
    let flags = root.field("flags");
    for (name, flag) in &doc.flags {
        let path = flags.key(name);
        if !is_resource_id(name) {
            return Err(path.error(format!("{name:?} is not a valid flag name: {RESOURCE_ID_RULE}")));
        }
        let (flag, segments) = compile_flag(name, parse(flag, &path)?, &path)?;
        state = segments.into_iter().fold(state, StateBuilder::segment).flag(flag);
    }
    Ok(state.build())
}

const RESOURCE_ID_RULE: &str =
    "use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'";

/// Names become resource names (`flags/<id>`, `.../variants/<id>`, `.../rules/<id>`), so they
/// follow Confidence's id rules; dots are excluded, which keeps derived segment names unique.
fn is_resource_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-')
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn compile_flag(name: &str, doc: FlagDoc, path: &Path) -> Parsed<(FlagBuilder, Vec<SegmentBuilder>)> {
    let mut flag = FlagBuilder::new(name).client(TEST_CLIENT).description(doc.description);
    if doc.archived {
        flag = flag.archived();
    }
    let variants_path = path.field("variants");
    let mut inferred = BTreeMap::new();
    for (id, value) in &doc.variants {
        let vpath = variants_path.key(id);
        if !is_resource_id(id) {
            return Err(vpath.error(format!("{id:?} is not a valid variant id: {RESOURCE_ID_RULE}")));
        }
        let Json::Object(fields) = value else {
            return Err(vpath.error(format!("a variant's value must be an object, got {}", kind_of(value))));
        };
        merge_fields(&mut inferred, fields, &vpath)?;
        flag = flag.variant(id, confidence_proto::json::to_struct(value));
    }
    let schema = match &doc.schema {
        None => shape_schema(&inferred),
        Some(declared) => {
            let declared = declared_fields(declared, &path.field("schema"))?;
            for (id, value) in &doc.variants {
                if let Json::Object(fields) = value {
                    check_fields(fields, &declared, &variants_path.key(id))?;
                }
            }
            declared_schema(&declared, &inferred)
        }
    };
    flag = flag.schema(schema);

    let variant_ids: Vec<&str> = doc.variants.keys().map(String::as_str).collect();
    let mut segments = Vec::new();
    let mut rule_names = Vec::new();
    for (i, rule) in doc.rules.iter().enumerate() {
        let rpath = path.field("rules").index(i);
        let rule_doc: RuleDoc = parse(rule, &rpath)?;
        let (rule, segment) = compile_rule(name, i, rule_doc, &variant_ids, &rpath)?;
        if rule_names.contains(&rule.id().to_string()) {
            return Err(rpath.field("name").error(format!("another rule of this flag is named {:?}", rule.id())));
        }
        rule_names.push(rule.id().to_string());
        flag = flag.rule(rule);
        segments.push(segment);
    }
    Ok((flag, segments))
}

/// One rule and the segment holding its audience (`when` + `rollout`). Segments are named
/// `<flag>.<rule>` (ids contain no dots, so names never collide): the resolver salts variant
/// buckets with the segment id, so each rule splits independently of the others, and a named
/// rule keeps its assignments when rules are reordered.
fn compile_rule(
    flag: &str,
    index: usize,
    doc: RuleDoc,
    variants: &[&str],
    path: &Path,
) -> Parsed<(RuleBuilder, SegmentBuilder)> {
    let id = doc.name.unwrap_or_else(|| format!("rule-{index}"));
    if !is_resource_id(&id) {
        return Err(path.field("name").error(format!("{id:?} is not a valid rule name: {RESOURCE_ID_RULE}")));
    }
    let segment_id = format!("{flag}.{id}");
    let known = |v: &str, at: &Path| match variants {
        _ if variants.contains(&v) => Ok(()),
        [] => Err(at.error(format!("unknown variant {v:?} (the flag has no variants)"))),
        _ => Err(at.error(format!("unknown variant {v:?} (variants: {})", variants.join(", ")))),
    };
    let mut rule = match (doc.variant, doc.split) {
        (Some(variant), None) => {
            known(&variant, &path.field("variant"))?;
            RuleBuilder::full(&id, &segment_id, &variant)
        }
        (None, Some(split)) => {
            RuleBuilder::split(&id, &segment_id, split_weights(&split, &path.field("split"), known)?)
        }
        (Some(_), Some(_)) => return Err(path.error("give either \"variant\" or \"split\", not both")),
        (None, None) => return Err(path.error("needs \"variant\" or \"split\"")),
    };
    if let Some(selector) = doc.targeting_key {
        if !is_dot_path(&selector) {
            return Err(path
                .field("targetingKey")
                .error(format!("{selector:?} is not a context path like \"user.id\"")));
        }
        rule = rule.selector(selector);
    }
    if let Some(name) = doc.sticky {
        if name.is_empty() {
            return Err(path.field("sticky").error("the materialization name must not be empty"));
        }
        rule = rule.materialization(Materialization::sticky(name));
    }

    let mut segment = SegmentBuilder::new(&segment_id);
    if let Some(when) = &doc.when {
        let mut criteria = Vec::new();
        let expression = compile_condition(when, &path.field("when"), &mut criteria)?;
        segment = criteria.into_iter().fold(segment, |s, (id, c)| s.criterion(id, c)).expression(expression);
    }
    if let Some(share) = doc.rollout {
        if !(share > 0.0 && share <= 1.0) {
            return Err(path.field("rollout").error(format!("must be in (0, 1], got {share}")));
        }
        if share < 1.0 {
            // The resolver admits units through the bitset only; the proportion is metadata.
            // Seeding by the segment keeps rollouts of different rules independent.
            let seed = murmur3(segment.name()).0;
            segment = segment.proportion(share.to_string()).bitset(Bitset::sampled(seed, share));
        }
    }
    Ok((rule, segment))
}

/// Bucket count of splits whose weights are not small integers.
const SCALED_BUCKETS: f64 = 1_000_000.0;

/// Split weights as integer buckets in variant-id order. Integer weights are used as given
/// (`{on: 50, off: 50}` → 100 buckets); other weights are scaled to a million buckets.
fn split_weights(
    split: &Map<String, Json>,
    path: &Path,
    known: impl Fn(&str, &Path) -> Parsed<()>,
) -> Parsed<Vec<(String, i32)>> {
    if split.is_empty() {
        return Err(path.error("needs at least one variant"));
    }
    let mut weights = Vec::new();
    for (variant, weight) in split {
        known(variant, path)?;
        match weight.as_f64() {
            Some(w) if w > 0.0 && w.is_finite() => weights.push((variant.clone(), w)),
            _ => return Err(path.key(variant).error(format!("weight must be a positive number, got {weight}"))),
        }
    }
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    if weights.iter().all(|(_, w)| w.fract() == 0.0) && total <= SCALED_BUCKETS {
        return Ok(weights.into_iter().map(|(v, w)| (v, w as i32)).collect());
    }
    // Cumulative rounding: the buckets add up to exactly a million.
    let mut out = Vec::new();
    let (mut seen, mut lower) = (0.0, 0i32);
    for (variant, w) in weights {
        seen += w;
        let upper = (seen / total * SCALED_BUCKETS).round() as i32;
        if upper == lower {
            return Err(path
                .key(&variant)
                .error(format!("weight {w} is too small next to the others (total {total})")));
        }
        out.push((variant, upper - lower));
        lower = upper;
    }
    Ok(out)
}

/// A dotted context path: non-empty components (`a..b` would look up an empty key).
fn is_dot_path(path: &str) -> bool {
    !path.is_empty() && path.split('.').all(|part| !part.is_empty())
}

/// Translates a condition into criteria (collected into `criteria`, ids `c0`, `c1`, ...) and
/// the expression combining them.
fn compile_condition(value: &Json, path: &Path, criteria: &mut Vec<(String, Criterion)>) -> Parsed<Expression> {
    let doc: ConditionDoc = parse(value, path)?;
    let combinators = [doc.all.is_some(), doc.any.is_some(), doc.not.is_some()].iter().filter(|b| **b).count();
    let Some(attribute) = doc.attribute.clone() else {
        if combinators != 1 || value.as_object().is_some_and(|o| o.len() != 1) {
            return Err(path.error(
                "needs exactly one of \"all\", \"any\", \"not\", or an \"attribute\" with an operator \
                 (equals, in, gt/gte/lt/lte, versionGt/versionGte/versionLt/versionLte, after/before)",
            ));
        }
        let list = |items: &[Json], at: Path, criteria: &mut Vec<_>| -> Parsed<Vec<Expression>> {
            items.iter().enumerate().map(|(i, c)| compile_condition(c, &at.index(i), criteria)).collect()
        };
        return match (&doc.all, &doc.any, &doc.not) {
            (Some(items), _, _) => Ok(expr::and(list(items, path.field("all"), criteria)?)),
            (_, Some(items), _) => Ok(expr::or(list(items, path.field("any"), criteria)?)),
            (_, _, Some(inner)) => Ok(expr::not(compile_condition(inner, &path.field("not"), criteria)?)),
            _ => Err(path.error("needs a condition")),
        };
    };
    if combinators > 0 {
        return Err(
            path.error("an \"attribute\" condition cannot also hold \"all\", \"any\" or \"not\"; nest it instead")
        );
    }
    if !is_dot_path(&attribute) {
        return Err(path.field("attribute").error(format!("{attribute:?} is not a context path like \"app.version\"")));
    }
    let op = attribute_op(&doc, value, path)?;
    let id = format!("c{}", criteria.len());
    criteria.push((id.clone(), attr(attribute, op)));
    Ok(expr::id(id))
}

/// The one operator of an attribute condition.
fn attribute_op(doc: &ConditionDoc, raw: &Json, path: &Path) -> Parsed<Op> {
    let numbers = [doc.gt, doc.gte, doc.lt, doc.lte].iter().any(Option::is_some);
    let versions = [&doc.version_gt, &doc.version_gte, &doc.version_lt, &doc.version_lte].iter().any(|v| v.is_some());
    let times = doc.after.is_some() || doc.before.is_some();
    let equals = doc.equals.is_some() || raw.get("equals").is_some();
    let groups = [equals, doc.one_of.is_some(), numbers, versions, times].iter().filter(|b| **b).count();
    if groups != 1 {
        return Err(path.error(if groups == 0 {
            "needs an operator: equals, in, gt/gte/lt/lte, versionGt/versionGte/versionLt/versionLte or after/before"
        } else {
            "combines operators of different kinds; use {\"all\": [...]} to require several"
        }));
    }
    if equals {
        let value = doc.equals.as_ref().unwrap_or(&Json::Null);
        return Ok(eq(scalar(value, &path.field("equals"))?));
    }
    if let Some(items) = &doc.one_of {
        let at = path.field("in");
        if items.is_empty() {
            return Err(at.error("needs at least one value"));
        }
        let values = items.iter().enumerate().map(|(i, v)| scalar(v, &at.index(i))).collect::<Parsed<Vec<_>>>()?;
        let kind = |v: &TValue| v.value.as_ref().map(std::mem::discriminant);
        if values.iter().any(|v| kind(v) != values.first().and_then(kind)) {
            return Err(at.error("values must all be of one type (strings, numbers or booleans)"));
        }
        return Ok(one_of(values));
    }
    if numbers {
        let lo = bound(doc.gt, doc.gte, ["gt", "gte"], t_num, path)?;
        return Ok(range(lo, bound(doc.lt, doc.lte, ["lt", "lte"], t_num, path)?));
    }
    if versions {
        let version = |v: &Option<String>, name: &str| -> Parsed<Option<String>> {
            match v {
                Some(s) if !is_version(s) => {
                    Err(path.field(name).error(format!("{s:?} is not a version like \"2.0.0\" (2 to 4 numbers)")))
                }
                other => Ok(other.clone()),
            }
        };
        let (gt, gte) = (version(&doc.version_gt, "versionGt")?, version(&doc.version_gte, "versionGte")?);
        let (lt, lte) = (version(&doc.version_lt, "versionLt")?, version(&doc.version_lte, "versionLte")?);
        let lo = bound(gt, gte, ["versionGt", "versionGte"], t_version, path)?;
        return Ok(range(lo, bound(lt, lte, ["versionLt", "versionLte"], t_version, path)?));
    }
    let instant = |v: &Option<String>, name: &str| -> Parsed<Option<TValue>> {
        v.as_ref()
            .map(|s| {
                parse_rfc3339(s).map(t_ts).ok_or_else(|| {
                    path.field(name).error(format!("{s:?} is not an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\""))
                })
            })
            .transpose()
    };
    let (after, before) = (instant(&doc.after, "after")?, instant(&doc.before, "before")?);
    Ok(range(after.map_or(Bound::Unbounded, Bound::Exclusive), before.map_or(Bound::Unbounded, Bound::Exclusive)))
}

/// One end of a range from its exclusive and inclusive forms, at most one of which is given.
fn bound<T>(
    exclusive: Option<T>,
    inclusive: Option<T>,
    names: [&str; 2],
    to_value: impl Fn(T) -> TValue,
    path: &Path,
) -> Parsed<Bound> {
    match (exclusive, inclusive) {
        (Some(_), Some(_)) => Err(path.error(format!("give \"{}\" or \"{}\", not both", names[0], names[1]))),
        (Some(v), None) => Ok(Bound::Exclusive(to_value(v))),
        (None, Some(v)) => Ok(Bound::Inclusive(to_value(v))),
        (None, None) => Ok(Bound::Unbounded),
    }
}

fn scalar(value: &Json, path: &Path) -> Parsed<TValue> {
    match value {
        Json::String(s) => Ok(t_str(s.clone())),
        Json::Bool(b) => Ok(t_bool(*b)),
        Json::Number(n) => n.as_f64().map(t_num).ok_or_else(|| path.error(format!("{n} is not a usable number"))),
        other => Err(path.error(format!("expected a string, number or boolean, got {}", kind_of(other)))),
    }
}

/// What the resolver can order: 2 to 4 dot-separated numbers of up to 10 digits, optionally
/// followed by `-suffix`. Anything else would silently order as 0.0.0.
fn is_version(v: &str) -> bool {
    let core = v.split('-').next().unwrap_or(v);
    let parts: Vec<&str> = core.split('.').collect();
    (2..=4).contains(&parts.len())
        && parts.iter().all(|p| (1..=10).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Schemas

/// A value type as far as the schema is concerned (inferred from variants or declared).
#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Bool,
    Int,
    Number,
    Str,
    Object(BTreeMap<String, Shape>),
    /// Element shape; `None` when no element was seen (or, declared, "infer it").
    List(Option<Box<Shape>>),
    /// Declared `"object"`: the fields are inferred from the variants.
    AnyObject,
}

impl Shape {
    fn describe(&self) -> &'static str {
        match self {
            Shape::Bool => "a boolean",
            Shape::Int => "an integer",
            Shape::Number => "a number",
            Shape::Str => "a string",
            Shape::Object(_) | Shape::AnyObject => "an object",
            Shape::List(_) => "a list",
        }
    }
}

/// The shape of one value; `null` has none (it fits any field).
fn shape_of(value: &Json, path: &Path) -> Parsed<Option<Shape>> {
    Ok(Some(match value {
        Json::Null => return Ok(None),
        Json::Bool(_) => Shape::Bool,
        Json::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => Shape::Int,
        Json::Number(_) => Shape::Number,
        Json::String(_) => Shape::Str,
        Json::Object(fields) => {
            let mut shapes = BTreeMap::new();
            merge_fields(&mut shapes, fields, path)?;
            Shape::Object(shapes)
        }
        Json::Array(items) => {
            let mut element: Option<Shape> = None;
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = shape_of(item, &path.index(i))? {
                    element = Some(match element {
                        None => s,
                        Some(prev) => merge(prev, s, &path.index(i))?,
                    });
                }
            }
            Shape::List(element.map(Box::new))
        }
    }))
}

/// Adds an object's fields to a union of field shapes.
fn merge_fields(into: &mut BTreeMap<String, Shape>, fields: &Map<String, Json>, path: &Path) -> Parsed<()> {
    for (name, value) in fields {
        let fpath = path.field(name);
        if let Some(shape) = shape_of(value, &fpath)? {
            let merged = match into.remove(name) {
                None => shape,
                Some(prev) => merge(prev, shape, &fpath)?,
            };
            into.insert(name.clone(), merged);
        }
    }
    Ok(())
}

/// The union of two shapes: integers widen to numbers, objects and lists merge; anything else
/// is a conflict reported where the second shape was found.
fn merge(a: Shape, b: Shape, path: &Path) -> Parsed<Shape> {
    Ok(match (a, b) {
        (Shape::Int, Shape::Number) | (Shape::Number, Shape::Int) => Shape::Number,
        (Shape::Object(mut x), Shape::Object(y)) => {
            for (name, shape) in y {
                let merged = match x.remove(&name) {
                    None => shape,
                    Some(prev) => merge(prev, shape, &path.field(&name))?,
                };
                x.insert(name, merged);
            }
            Shape::Object(x)
        }
        (Shape::List(x), Shape::List(y)) => Shape::List(match (x, y) {
            (Some(x), Some(y)) => Some(Box::new(merge(*x, *y, path)?)),
            (x, y) => x.or(y),
        }),
        (a, b) if a == b => a,
        (a, b) => {
            return Err(path.error(format!(
                "is {} here but {} elsewhere: a field has one type",
                b.describe(),
                a.describe()
            )))
        }
    })
}

fn shape_schema(fields: &BTreeMap<String, Shape>) -> StructFlagSchema {
    struct_schema(fields.iter().map(|(name, shape)| (name.clone(), to_schema(shape))))
}

fn to_schema(shape: &Shape) -> FlagSchema {
    match shape {
        Shape::Bool => s_bool(),
        Shape::Int => s_int(),
        Shape::Number => s_double(),
        Shape::Str => s_string(),
        Shape::Object(fields) => s_struct(fields.iter().map(|(name, s)| (name.clone(), to_schema(s)))),
        Shape::AnyObject => s_struct(Vec::<(String, FlagSchema)>::new()),
        // Confidence needs an element type even for lists that are always empty.
        Shape::List(element) => s_list(element.as_deref().map_or_else(s_string, to_schema)),
    }
}

fn declared_fields(fields: &Map<String, Json>, path: &Path) -> Parsed<BTreeMap<String, Shape>> {
    fields.iter().map(|(name, v)| Ok((name.clone(), declared_shape(v, &path.field(name))?))).collect()
}

fn declared_shape(value: &Json, path: &Path) -> Parsed<Shape> {
    Ok(match value {
        Json::String(s) => match s.as_str() {
            "boolean" => Shape::Bool,
            "string" => Shape::Str,
            "integer" => Shape::Int,
            "number" => Shape::Number,
            "object" => Shape::AnyObject,
            "list" => Shape::List(None),
            other => {
                return Err(path.error(format!(
                    "unknown type {other:?} (boolean, string, integer, number, object, list, or an object of fields)"
                )))
            }
        },
        Json::Object(fields) => Shape::Object(declared_fields(fields, path)?),
        other => return Err(path.error(format!("expected a type name or an object of fields, got {}", kind_of(other)))),
    })
}

/// Checks a variant's value against a declared schema: every field declared, every type fitting.
fn check_fields(fields: &Map<String, Json>, declared: &BTreeMap<String, Shape>, path: &Path) -> Parsed<()> {
    for (name, value) in fields {
        let fpath = path.field(name);
        let Some(expected) = declared.get(name) else {
            return Err(fpath.error("is not in the flag's schema"));
        };
        let fits = match (expected, value) {
            (_, Json::Null) => true,
            (Shape::Bool, Json::Bool(_)) | (Shape::Str, Json::String(_)) | (Shape::Number, Json::Number(_)) => true,
            (Shape::Int, Json::Number(n)) => n.as_f64().is_some_and(|f| f.fract() == 0.0),
            (Shape::AnyObject, Json::Object(_)) | (Shape::List(_), Json::Array(_)) => true,
            (Shape::Object(inner), Json::Object(o)) => {
                check_fields(o, inner, &fpath)?;
                true
            }
            _ => false,
        };
        if !fits {
            return Err(fpath.error(format!("the schema says {}, got {value}", expected.describe())));
        }
    }
    Ok(())
}

/// The declared schema, with `"object"` fields and list elements filled in from the variants.
fn declared_schema(declared: &BTreeMap<String, Shape>, inferred: &BTreeMap<String, Shape>) -> StructFlagSchema {
    struct_schema(declared.iter().map(|(name, shape)| (name.clone(), declared_field(shape, inferred.get(name)))))
}

fn declared_field(declared: &Shape, inferred: Option<&Shape>) -> FlagSchema {
    match (declared, inferred) {
        (Shape::AnyObject, Some(found @ Shape::Object(_))) | (Shape::List(_), Some(found @ Shape::List(_))) => {
            to_schema(found)
        }
        (Shape::Object(fields), found) => {
            let inner = match found {
                Some(Shape::Object(f)) => f.clone(),
                _ => BTreeMap::new(),
            };
            s_struct(declared_schema(fields, &inner).schema)
        }
        (shape, _) => to_schema(shape),
    }
}
