//! The test kit's native half: resolver states built from plain JSON descriptions of flags, and
//! the log batches a provider would upload decoded into JSON a test can assert on.
//!
//! Users of the provider should be able to test their own code against real Confidence
//! semantics without a Confidence account: the description is compiled through `state_builder`
//! into an ordinary state, so the real resolver (targeting, bucketing, logs) answers it.

use std::collections::BTreeMap;
use std::fmt;

use confidence_resolver::proto::confidence::flags::admin::v1::{
    client_resolve_info::EvaluationContextSchemaInstance, context_field_semantic_type, evaluation_context_schema_field,
    ClientResolveInfo, FlagResolveInfo,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::events::{
    flag_assigned::{applied_flag, default_assignment::DefaultAssignmentReason, AppliedFlag},
    FallthroughAssignment, FlagAssigned,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    sdk, ResolveReason, Sdk, SdkId, TelemetryData, WriteFlagLogsRequest,
};
use confidence_resolver::proto::confidence::flags::types::v1::{flag_schema::StructFlagSchema, Expression, FlagSchema};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use state_builder::hash::murmur3;
use state_builder::time::{format_rfc3339, parse_rfc3339};
use state_builder::{
    attr, eq, expr, one_of, range, s_bool, s_double, s_int, s_list, s_string, s_struct, struct_schema, t_bool, t_num,
    t_str, t_ts, t_version, Bitset, Bound, BuiltState, ClientBuilder, Criterion, FlagBuilder, Materialization, Op,
    RuleBuilder, SegmentBuilder, StateBuilder, TValue,
};

use crate::{err, Code, Result};

/// Secret of the test client when the description names none.
pub const DEFAULT_CLIENT_SECRET: &str = "test-client-secret";
/// Account of the state when the description names none.
pub const DEFAULT_ACCOUNT: &str = "test-account";
/// The one client every described flag is served to (`clients/<id>`).
pub const TEST_CLIENT: &str = "test-client";

/// A resolver state from a JSON description of flags (camelCase keys), encoded as the CDN
/// serves it unencrypted: pass it as `initialState` of an offline provider.
///
/// ```text
/// {
///   clientSecret?: string            // default "test-client-secret"
///   accountId?: string               // default "test-account"
///   flags?: { [name: string]: {      // name: lowercase letters, digits, '-' (a resource id)
///     variants?: { [id: string]: object }  // each variant's value (ids: like flag names)
///     schema?: { [field: string]: "boolean" | "string" | "integer" | "number" | "object" | "list" | {nested} }
///                                     // default: inferred from the variants (union of their fields)
///     rules?: Rule[]                  // first match wins; no match: the caller's default value
///     archived?: boolean              // archived flags are never resolved
///     description?: string
///   } }
/// }
/// Rule = {
///   name?: string                     // default "rule-<index>"
///   variant?: string                  // everyone matched gets this variant, or
///   split?: { [variant: string]: number }  // relative weights, bucketed by the targeting key
///   when?: Condition                  // default: everyone
///   rollout?: number                  // (0, 1]: share of units admitted (needs a targeting key)
///   targetingKey?: string             // context path of the unit, default "targeting_key"
///   sticky?: string                   // materialization keeping assignments sticky
/// }
/// Condition = { attribute: "a.b", equals: string | number | boolean }
///   | { attribute, in: [scalars of one type] }
///   | { attribute, gt?, gte?, lt?, lte?: number }
///   | { attribute, versionGt?, versionGte?, versionLt?, versionLte?: "1.2.3" }
///   | { attribute, after?, before?: "2026-01-01T00:00:00Z" }  // exclusive bounds
///   | { all: Condition[] } | { any: Condition[] } | { not: Condition }
/// ```
///
/// Conditions mean exactly what Confidence's resolver makes of them: a missing attribute matches
/// no operator, and a numeric condition meeting a context string that is not a number fails the
/// whole resolve.
///
/// Invalid descriptions throw `INVALID_OPTION` with the path of the problem, e.g.
/// `flags["new-ui"].rules[1].split: unknown variant "blue" (variants: off, on)`.
#[napi(catch_unwind)]
pub fn build_test_state(description_json: String) -> Result<Buffer> {
    let state = state_from_description(&description_json).map_err(|e| err(Code::InvalidOption, e))?;
    Ok(state.encode_client_resolver_state().into())
}

/// The demo's state (`npm run demo`), encoded like [`build_test_state`]'s.
#[napi]
pub fn demo_state() -> Buffer {
    state_builder::demo_state().encode_client_resolver_state().into()
}

/// Decodes one uploaded log batch (a serialized `WriteFlagLogsRequest`) into JSON. Resource
/// names stay as on the wire (`flags/<flag>`, `flags/<flag>/variants/<id>`, ...); optional
/// (`?`) fields are left out when empty on the wire; aggregate lists are sorted by name.
///
/// ```text
/// {
///   flagAssigned: [{                  // exposures, in the order they were logged
///     resolveId: string
///     client?: string, clientCredential?: string
///     sdk?: { id?: string, customId?: string, version: string }
///     flags: [{
///       flag: string
///       variant?: string, segment?: string   // when a variant was assigned
///       reason?: string               // otherwise: NO_SEGMENT_MATCH, FLAG_ARCHIVED, ...
///       targetingKey: string, targetingKeySelector?: string
///       assignmentId?: string, rule?: string
///       applyTime?: string            // RFC 3339
///       fallthroughAssignments: [{ rule, assignmentId, targetingKey, targetingKeySelector? }]
///     }]
///   }]
///   flagResolveInfo: [{ flag, variants: [{ variant?, count }],
///                       rules: [{ rule, count, assignments: [{ assignmentId, count }] }] }]
///   clientResolveInfo: [{ client, clientCredential,
///                         schemas: [{ fields: { [path]: "STRING_KIND" | ... },
///                                     semanticTypes: { [path]: "country" | "date" | ... } }] }]
///   telemetry?: { resolverVersion, memoryBytes, sdk?, resolveLatency?: { count, sum },
///                 resolveRate: [{ reason, count }] }
/// }
/// ```
#[napi(catch_unwind)]
pub fn decode_flag_logs(batch: Buffer) -> Result<String> {
    let logs = flag_logs(&batch).map_err(|e| err(Code::InvalidOption, format!("not a flag log batch: {e}")))?;
    serde_json::to_string(&logs).map_err(|e| err(Code::InvalidOption, e))
}

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

/// Compiles a description (see [`build_test_state`] for its shape) into a state.
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
        flag = flag.variant(id, crate::context::to_struct(value));
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

// ---------------------------------------------------------------------------------------------
// Logs

/// [`decode_flag_logs`]'s output (see its doc comment for the JSON shape).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagLogs {
    pub flag_assigned: Vec<Exposure>,
    pub flag_resolve_info: Vec<FlagResolveSummary>,
    pub client_resolve_info: Vec<ClientResolveSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySummary>,
}

/// One `FlagAssigned` event: the exposures of one resolve (or one apply).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    pub resolve_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    pub flags: Vec<ExposedFlag>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SdkInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub version: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedFlag {
    pub flag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Why no variant was assigned (`DefaultAssignmentReason` name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub targeting_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeting_key_selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_time: Option<String>,
    pub fallthrough_assignments: Vec<Fallthrough>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fallthrough {
    pub rule: String,
    pub assignment_id: String,
    pub targeting_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targeting_key_selector: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagResolveSummary {
    pub flag: String,
    pub variants: Vec<VariantCount>,
    pub rules: Vec<RuleCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantCount {
    /// Absent for resolves that assigned no variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCount {
    pub rule: String,
    pub count: i64,
    pub assignments: Vec<AssignmentCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentCount {
    pub assignment_id: String,
    pub count: i64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientResolveSummary {
    pub client: String,
    pub client_credential: String,
    pub schemas: Vec<ContextSchema>,
}

/// The shape of one evaluation context the client sent (flattened dot paths).
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ContextSchema {
    pub fields: BTreeMap<String, String>,
    pub semantic_types: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySummary {
    pub resolver_version: String,
    pub memory_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<SdkInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolve_latency: Option<LatencySummary>,
    pub resolve_rate: Vec<ReasonCount>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u32,
    /// Microseconds.
    pub sum: u32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonCount {
    /// `ResolveReason` name, e.g. `RESOLVE_REASON_MATCH`.
    pub reason: String,
    pub count: u32,
}

/// Decodes one serialized `WriteFlagLogsRequest` (see [`decode_flag_logs`]).
pub fn flag_logs(batch: &[u8]) -> std::result::Result<FlagLogs, prost::DecodeError> {
    let request = WriteFlagLogsRequest::decode(batch)?;
    let mut flag_resolve_info: Vec<_> = request.flag_resolve_info.into_iter().map(flag_summary).collect();
    flag_resolve_info.sort_by(|a, b| a.flag.cmp(&b.flag));
    let mut client_resolve_info: Vec<_> = request.client_resolve_info.into_iter().map(client_summary).collect();
    client_resolve_info.sort_by(|a, b| a.client_credential.cmp(&b.client_credential));
    Ok(FlagLogs {
        flag_assigned: request.flag_assigned.into_iter().map(exposure).collect(),
        flag_resolve_info,
        client_resolve_info,
        telemetry: request.telemetry_data.map(telemetry),
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn exposure(event: FlagAssigned) -> Exposure {
    let info = event.client_info.unwrap_or_default();
    Exposure {
        resolve_id: event.resolve_id,
        client: non_empty(info.client),
        client_credential: non_empty(info.client_credential),
        sdk: info.sdk.map(sdk_info),
        flags: event.flags.into_iter().map(exposed_flag).collect(),
    }
}

fn sdk_info(sdk: Sdk) -> SdkInfo {
    let (id, custom_id) = match sdk.sdk {
        Some(sdk::Sdk::Id(n)) => {
            (Some(SdkId::try_from(n).map_or_else(|_| n.to_string(), |id| id.as_str_name().into())), None)
        }
        Some(sdk::Sdk::CustomId(custom)) => (None, Some(custom)),
        None => (None, None),
    };
    SdkInfo { id, custom_id, version: sdk.version }
}

fn exposed_flag(f: AppliedFlag) -> ExposedFlag {
    let (variant, segment, reason) = match f.assignment {
        Some(applied_flag::Assignment::AssignmentInfo(a)) => (non_empty(a.variant), non_empty(a.segment), None),
        Some(applied_flag::Assignment::DefaultAssignment(d)) => {
            let name = DefaultAssignmentReason::try_from(d.reason)
                .map_or_else(|_| d.reason.to_string(), |r| r.as_str_name().to_string());
            (None, None, Some(name))
        }
        None => (None, None, None),
    };
    ExposedFlag {
        flag: f.flag,
        variant,
        segment,
        reason,
        targeting_key: f.targeting_key,
        targeting_key_selector: non_empty(f.targeting_key_selector),
        assignment_id: non_empty(f.assignment_id),
        rule: non_empty(f.rule),
        apply_time: f.apply_time.as_ref().map(format_rfc3339),
        fallthrough_assignments: f.fallthrough_assignments.into_iter().map(fallthrough).collect(),
    }
}

fn fallthrough(f: FallthroughAssignment) -> Fallthrough {
    Fallthrough {
        rule: f.rule,
        assignment_id: f.assignment_id,
        targeting_key: f.targeting_key,
        targeting_key_selector: non_empty(f.targeting_key_selector),
    }
}

fn flag_summary(info: FlagResolveInfo) -> FlagResolveSummary {
    let mut variants: Vec<_> = info
        .variant_resolve_info
        .into_iter()
        .map(|v| VariantCount { variant: non_empty(v.variant), count: v.count })
        .collect();
    variants.sort_by(|a, b| a.variant.cmp(&b.variant));
    let mut rules: Vec<_> = info
        .rule_resolve_info
        .into_iter()
        .map(|r| {
            let mut assignments: Vec<_> = r
                .assignment_resolve_info
                .into_iter()
                .map(|a| AssignmentCount { assignment_id: a.assignment_id, count: a.count })
                .collect();
            assignments.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
            RuleCount { rule: r.rule, count: r.count, assignments }
        })
        .collect();
    rules.sort_by(|a, b| a.rule.cmp(&b.rule));
    FlagResolveSummary { flag: info.flag, variants, rules }
}

fn client_summary(info: ClientResolveInfo) -> ClientResolveSummary {
    let mut schemas: Vec<_> = info.schema.into_iter().map(context_schema).collect();
    schemas.sort();
    ClientResolveSummary { client: info.client, client_credential: info.client_credential, schemas }
}

fn context_schema(s: EvaluationContextSchemaInstance) -> ContextSchema {
    use context_field_semantic_type::Type;
    let fields = s
        .schema
        .into_iter()
        .map(|(path, kind)| {
            let name = evaluation_context_schema_field::Kind::try_from(kind)
                .map_or_else(|_| kind.to_string(), |k| k.as_str_name().to_string());
            (path, name)
        })
        .collect();
    let semantic_types = s
        .semantic_types
        .into_iter()
        .map(|(path, t)| {
            let name = match t.r#type {
                Some(Type::Country(_)) => "country",
                Some(Type::EnumType(_)) => "enum",
                Some(Type::EntityReference(_)) => "entity",
                Some(Type::Version(_)) => "version",
                Some(Type::Date(_)) => "date",
                Some(Type::Timestamp(_)) => "timestamp",
                None => "unspecified",
            };
            (path, name.to_string())
        })
        .collect();
    ContextSchema { fields, semantic_types }
}

fn telemetry(t: TelemetryData) -> TelemetrySummary {
    TelemetrySummary {
        resolver_version: t.resolver_version,
        memory_bytes: t.memory_bytes,
        sdk: t.sdk.map(sdk_info),
        resolve_latency: t.resolve_latency.map(|l| LatencySummary { count: l.count, sum: l.sum }),
        resolve_rate: t
            .resolve_rate
            .into_iter()
            .map(|r| ReasonCount {
                reason: ResolveReason::try_from(r.reason)
                    .map_or_else(|_| r.reason.to_string(), |n| n.as_str_name().to_string()),
                count: r.count,
            })
            .collect(),
    }
}
