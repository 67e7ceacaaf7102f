//! Evaluation contexts and requests for random states: attribute values that hit and miss the
//! generated rules, wrong types, nulls, missing paths, and targeting keys of every shape.

use std::collections::BTreeMap;

use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveFlagsRequest;
use confidence_resolver::proto::google::{value::Kind as VKind, Struct, Value};

use super::attrs::{Kind, NON_NUMERIC_STRINGS, NUMERIC_STRINGS};
use crate::rng::Rng;
use crate::value::{set_path, v_bool, v_list, v_null, v_num, v_obj, v_str, v_unset};

/// Units (targeting-key strings) shared by bitsets, bloom filters and contexts, so that unit
/// lists in the state actually occur in requests.
pub fn unit_pool() -> Vec<String> {
    let mut units: Vec<String> = ["alice", "bob", "carol", "dave", "åsa", "ünïcode", "😀", "42", "-7", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    units.extend((1..=20).map(|i| format!("user-{i}")));
    units.push("1000000000000000000000".into());
    units
}

/// What the generated state looks at in a context.
#[derive(Clone, Debug, Default)]
pub struct ContextModel {
    /// Attribute path → (kind, values worth trying).
    pub attributes: BTreeMap<String, (Kind, Vec<Value>)>,
    /// Paths rules read their unit from (besides `targeting_key`).
    pub selectors: Vec<String>,
    /// The unit pool.
    pub units: Vec<String>,
    /// Whether values that fail the whole request may appear.
    pub request_errors: bool,
}

impl ContextModel {
    /// A value for a targeting-key path; `None` leaves the path missing.
    pub fn key_value(&self, rng: &mut Rng) -> Option<Value> {
        let r = rng.below(100);
        Some(match r {
            0..=54 => v_str(rng.pick(&self.units)),
            55..=66 => v_num(rng.pick(&[
                42.0,
                -7.0,
                0.0,
                -0.0,
                1e15,
                9_007_199_254_740_993.0,
                1e21,
                1.234_567_890_123_456_8e20,
                123_456.0,
            ])),
            67..=71 => v_num(rng.pick(&[1e100, 4.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY])),
            72..=74 => v_str(""),
            75..=78 => v_str(rng.pick(&["k".repeat(100), "k".repeat(101), "å".repeat(50), "å".repeat(51)])),
            79..=82 => rng.pick(&[v_bool(true), v_obj([("id", v_str("alice"))]), v_list([v_str("alice")])]),
            83..=86 => rng.pick(&[v_null(), v_unset()]),
            _ => return None,
        })
    }

    fn scalar_of_kind(&self, kind: Kind, rng: &mut Rng) -> Value {
        match kind {
            Kind::Str | Kind::StrList | Kind::Key => v_str(format!("s{}", rng.below(1000))),
            Kind::Num | Kind::NumList => v_num(rng.range(-100, 1000) as f64 / 4.0),
            Kind::Bool => v_bool(rng.chance(0.5)),
            Kind::Timestamp => v_num(rng.range(0, 2_000_000_000) as f64),
            Kind::Version => v_str(format!("{}.{}.{}", rng.below(4), rng.below(12), rng.below(20))),
        }
    }

    fn wrong_type(&self, kind: Kind, rng: &mut Rng) -> Value {
        let mut options = vec![
            v_bool(rng.chance(0.5)),
            v_obj([("nested", v_str("x"))]),
            v_list([v_bool(false)]),
            v_num(rng.range(-5, 5) as f64 * 1.5),
        ];
        if kind.numeric() {
            options.push(v_str(rng.pick(NUMERIC_STRINGS)));
        } else {
            options.push(v_str("xyz"));
        }
        rng.pick(&options)
    }

    fn attribute_value(&self, kind: Kind, hints: &[Value], rng: &mut Rng) -> Value {
        let v = match rng.below(100) {
            0..=54 if !hints.is_empty() => rng.pick(hints),
            55..=69 => self.scalar_of_kind(kind, rng),
            70..=76 => v_null(),
            77..=79 => v_unset(),
            80..=89 => self.wrong_type(kind, rng),
            _ => {
                let n = rng.index(4);
                v_list((0..n).map(|_| {
                    if hints.is_empty() || rng.chance(0.2) {
                        self.scalar_of_kind(kind, rng)
                    } else {
                        rng.pick(hints)
                    }
                }))
            }
        };
        if kind.numeric() && self.request_errors && rng.chance(0.03) {
            return v_str(rng.pick(NON_NUMERIC_STRINGS));
        }
        if kind.numeric() && !self.request_errors {
            return numeric_safe(v);
        }
        v
    }

    /// A context exercising the state's rules.
    pub fn context(&self, rng: &mut Rng) -> Struct {
        let mut ctx = Struct::default();
        if rng.chance(0.02) {
            return ctx; // empty context
        }
        if rng.chance(0.03) {
            // An intermediate object replaced by a scalar: every `user.*` path goes missing.
            ctx.fields.insert("user".into(), v_str("not-an-object"));
        }
        if let Some(v) = self.key_value(rng) {
            ctx.fields.insert("targeting_key".into(), v);
        }
        if rng.chance(0.02) {
            return ctx; // nothing but the targeting key
        }
        let key_paths = self
            .attributes
            .iter()
            .filter(|(p, (k, _))| *k == Kind::Key && p.as_str() != "targeting_key")
            .map(|(p, _)| p);
        let mut paths: Vec<&String> = self.selectors.iter().chain(key_paths).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            if rng.chance(0.7) {
                if let Some(v) = self.key_value(rng) {
                    set_path(&mut ctx, path, v);
                }
            }
        }
        for (path, (kind, hints)) in &self.attributes {
            if *kind == Kind::Key || !rng.chance(0.8) {
                continue;
            }
            let v = self.attribute_value(*kind, hints, rng);
            set_path(&mut ctx, path, v);
        }
        if rng.chance(0.15) {
            // A literal dotted key: not addressable by the dotted path `user.country`.
            ctx.fields.insert("user.country".into(), v_str("SE"));
        }
        if rng.chance(0.1) {
            ctx.fields.insert("extra".into(), v_obj([("deep", v_obj([("list", v_list([v_num(1), v_null()]))]))]));
        }
        ctx
    }

    /// A resolve request for one of `secrets`, over a random selection of `flags`.
    pub fn request(&self, secrets: &[String], flags: &[String], rng: &mut Rng) -> ResolveFlagsRequest {
        let client_secret =
            if self.request_errors && rng.chance(0.03) { "not-a-known-secret".to_string() } else { rng.pick(secrets) };
        let mut names = Vec::new();
        if rng.chance(0.5) {
            names = rng.subset(flags, 4);
            if rng.chance(0.15) {
                names.push("flags/does-not-exist".into());
            }
            if rng.chance(0.1) {
                if let Some(first) = names.first().cloned() {
                    names.push(first);
                }
            }
        }
        ResolveFlagsRequest {
            flags: names,
            evaluation_context: (!rng.chance(0.03)).then(|| self.context(rng)),
            client_secret,
            apply: rng.chance(0.5),
            sdk: None,
        }
    }
}

/// Replaces strings that are not valid `f64` text (recursively inside lists) so a numeric
/// rule can never fail the whole request.
fn numeric_safe(v: Value) -> Value {
    match v.kind {
        Some(VKind::StringValue(s)) if s.parse::<f64>().is_err() => v_num(0.0),
        Some(VKind::ListValue(l)) => v_list(l.values.into_iter().map(numeric_safe)),
        kind => Value { kind },
    }
}
