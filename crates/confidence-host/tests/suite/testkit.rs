//! The test kit: states built from JSON descriptions answer as described when the real guest
//! resolves them, bad descriptions are refused with the path of the problem, and flushed log
//! batches decode into the exposures and counters that were logged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::Engine;
use confidence_host::guest::Clock;
use confidence_host::resolver_host::{HostConfig, ResolverHost};
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    AppliedFlag, ApplyFlagsRequest, MaterializationRecord, ResolveFlagsRequest, ResolveFlagsResponse,
    ResolveProcessRequest, ResolveReason, ResolvedFlag,
};
use confidence_testkit::*;
use prost::Message;
use serde_json::{json, Value as Json};
use state_builder::hash::variant_bucket;
use state_builder::{s_bool, s_double, s_int, s_list, s_string, s_struct, struct_schema};

/// A described state loaded into a real engine.
struct Kit {
    engine: WasmEngine,
    secret: String,
}

impl Kit {
    fn new(description: Json) -> Kit {
        Self::with_config(description, WasmEngineConfig::default())
    }

    fn with_config(description: Json, config: WasmEngineConfig) -> Kit {
        let payload = build_test_state(description.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let envelope = ClientResolverState::decode(&payload[..]).expect("a CDN envelope");
        let engine = WasmEngine::new(ours().clone(), config).expect("engine");
        engine.load_state(&set_state_request(envelope.state, &envelope.account)).expect("the guest accepts the state");
        let secret = description["clientSecret"].as_str().unwrap_or(DEFAULT_CLIENT_SECRET).to_string();
        Kit { engine, secret }
    }

    fn request_for(&self, flags: &[&str], context: Json, apply: bool) -> ResolveFlagsRequest {
        let names: Vec<String> = flags.iter().map(|f| format!("flags/{f}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        request(&self.secret, &names, to_struct(&context), apply)
    }

    fn response(&self, flags: &[&str], context: Json, apply: bool) -> ResolveFlagsResponse {
        let req = ResolveProcessRequest::without_materializations(self.request_for(flags, context, apply));
        self.engine.resolve(req).expect("resolve").into_resolved().expect("not suspended").0
    }

    fn flag(&self, flag: &str, context: Json) -> ResolvedFlag {
        let mut flags = self.response(&[flag], context, false).resolved_flags;
        assert_eq!(flags.len(), 1, "{flag} resolved once");
        flags.remove(0)
    }

    /// The short id of the assigned variant, `None` when none was.
    fn variant(&self, flag: &str, context: Json) -> Option<String> {
        let f = self.flag(flag, context);
        f.variant.strip_prefix(&format!("flags/{flag}/variants/")).map(String::from)
    }
}

fn on_off(rules: Json) -> Json {
    json!({ "flags": { "f": {
        "variants": { "on": { "enabled": true }, "off": { "enabled": false } },
        "rules": rules,
    } } })
}

/// One flag served to whoever `when` matches; each context must match as stated.
fn assert_matches(when: Json, cases: &[(Json, bool)]) {
    let kit = Kit::new(on_off(json!([{ "variant": "on", "when": when }])));
    for (context, expected) in cases {
        let f = kit.flag("f", context.clone());
        let matched = f.variant == "flags/f/variants/on";
        assert_eq!(matched, *expected, "when {when} for context {context}: {f:?}");
        if !matched {
            assert_eq!(f.reason, ResolveReason::NoSegmentMatch as i32, "{context}");
            assert!(f.value.is_none(), "no match leaves the value to the caller's default");
        }
    }
}

fn keys(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!("user-{i}"))
}

#[test]
fn equals_compares_strings_numbers_and_booleans() {
    assert_matches(
        json!({ "attribute": "country", "equals": "SE" }),
        &[
            (json!({ "country": "SE" }), true),
            (json!({ "country": "se" }), false),
            (json!({ "country": ["DK", "SE"] }), true),
            (json!({}), false),
        ],
    );
    assert_matches(
        json!({ "attribute": "seats", "equals": 3 }),
        &[(json!({ "seats": 3 }), true), (json!({ "seats": 3.5 }), false), (json!({ "seats": "3" }), true)],
    );
    assert_matches(
        json!({ "attribute": "beta", "equals": true }),
        &[(json!({ "beta": true }), true), (json!({ "beta": false }), false), (json!({}), false)],
    );
}

#[test]
fn in_matches_any_listed_value() {
    assert_matches(
        json!({ "attribute": "plan", "in": ["pro", "enterprise"] }),
        &[
            (json!({ "plan": "pro" }), true),
            (json!({ "plan": "enterprise" }), true),
            (json!({ "plan": "free" }), false),
            (json!({}), false),
        ],
    );
    assert_matches(
        json!({ "attribute": "tier", "in": [1, 2] }),
        &[(json!({ "tier": 2 }), true), (json!({ "tier": 3 }), false)],
    );
}

#[test]
fn numeric_ranges_honour_inclusive_and_exclusive_bounds() {
    assert_matches(
        json!({ "attribute": "age", "gte": 18, "lt": 65 }),
        &[
            (json!({ "age": 17 }), false),
            (json!({ "age": 18 }), true),
            (json!({ "age": 64.9 }), true),
            (json!({ "age": 65 }), false),
            (json!({}), false),
        ],
    );
    assert_matches(
        json!({ "attribute": "score", "gt": 0.5, "lte": 1 }),
        &[
            (json!({ "score": 0.5 }), false),
            (json!({ "score": 0.51 }), true),
            (json!({ "score": 1 }), true),
            (json!({ "score": 1.01 }), false),
        ],
    );
}

#[test]
fn a_numeric_condition_on_a_non_numeric_string_fails_the_resolve() {
    let kit = Kit::new(on_off(json!([{ "variant": "on", "when": { "attribute": "age", "gte": 18 } }])));
    let req = kit.request_for(&[], json!({ "age": "abc" }), false);
    assert!(kit.engine.resolve(ResolveProcessRequest::without_materializations(req)).is_err());
    assert_eq!(kit.variant("f", json!({ "age": "21" })).as_deref(), Some("on"));
}

#[test]
fn versions_compare_semantically_at_dot_paths() {
    let version = |v: &str| json!({ "app": { "version": v } });
    assert_matches(
        json!({ "attribute": "app.version", "versionGte": "2.0.0" }),
        &[
            (version("2.0.0"), true),
            (version("10.1.0"), true),
            (version("2.0.1"), true),
            (version("1.9.9"), false),
            (json!({ "app": {} }), false),
            (json!({ "app.version": "3.0.0" }), false),
        ],
    );
    assert_matches(
        json!({ "attribute": "app.version", "versionGt": "1.2", "versionLt": "2.0.0" }),
        &[(version("1.10.0"), true), (version("1.2.0"), false), (version("2.0.0"), false)],
    );
}

#[test]
fn timestamps_compare_as_instants() {
    // 2026-01-01T00:00:00Z = 1767225600.
    assert_matches(
        json!({ "attribute": "signup", "after": "2026-01-01T00:00:00Z" }),
        &[
            (json!({ "signup": "2026-01-01T00:00:01Z" }), true),
            (json!({ "signup": "2026-01-01T00:00:00Z" }), false),
            (json!({ "signup": "2025-12-31T23:00:00-02:00" }), true),
            (json!({ "signup": "2025-12-31" }), false),
            (json!({ "signup": 1_767_225_601 }), true),
            (json!({}), false),
        ],
    );
    assert_matches(
        json!({ "attribute": "signup", "after": "2025-06-01", "before": "2026-01-01T00:00:00+01:00" }),
        &[
            (json!({ "signup": "2025-12-31T22:59:59Z" }), true),
            (json!({ "signup": "2025-12-31T23:00:00Z" }), false),
            (json!({ "signup": "2025-06-01T00:00:00Z" }), false),
        ],
    );
}

#[test]
fn all_any_and_not_combine_conditions() {
    let se = json!({ "attribute": "country", "equals": "SE" });
    let free = json!({ "attribute": "plan", "equals": "free" });
    assert_matches(
        json!({ "all": [se, { "not": free }] }),
        &[
            (json!({ "country": "SE", "plan": "pro" }), true),
            (json!({ "country": "SE" }), true),
            (json!({ "country": "SE", "plan": "free" }), false),
            (json!({ "country": "DK", "plan": "pro" }), false),
        ],
    );
    assert_matches(
        json!({ "any": [{ "all": [se, { "attribute": "age", "gte": 18 }] }, { "attribute": "staff", "equals": true }] }),
        &[
            (json!({ "country": "SE", "age": 30 }), true),
            (json!({ "country": "SE", "age": 12 }), false),
            (json!({ "staff": true }), true),
            (json!({}), false),
        ],
    );
    assert_matches(json!({ "all": [] }), &[(json!({}), true)]);
    assert_matches(json!({ "any": [] }), &[(json!({ "country": "SE" }), false)]);
}

#[test]
fn the_first_matching_rule_wins_and_none_leaves_the_default() {
    let kit = Kit::new(json!({ "flags": { "theme": {
        "variants": { "dark": { "mode": "dark" }, "light": { "mode": "light" } },
        "rules": [
            { "name": "swedes", "variant": "dark", "when": { "attribute": "country", "equals": "SE" } },
            { "variant": "light", "when": { "attribute": "plan", "equals": "pro" } },
        ],
    } } }));
    let both = kit.flag("theme", json!({ "country": "SE", "plan": "pro" }));
    assert_eq!(both.variant, "flags/theme/variants/dark");
    assert_eq!(both.assignment_origin, "flags/theme/rules/swedes");
    assert_eq!(both.reason, ResolveReason::Match as i32);
    assert_eq!(from_struct(both.value.as_ref().unwrap()), json!({ "mode": "dark" }));
    let pro = kit.flag("theme", json!({ "country": "DK", "plan": "pro" }));
    assert_eq!(
        (pro.variant.as_str(), pro.assignment_origin.as_str()),
        ("flags/theme/variants/light", "flags/theme/rules/rule-1")
    );
    let neither = kit.flag("theme", json!({ "country": "DK" }));
    assert_eq!(neither.reason, ResolveReason::NoSegmentMatch as i32);
    assert_eq!((neither.variant.as_str(), neither.value.is_none()), ("", true));

    let no_rules = Kit::new(json!({ "flags": { "idle": { "variants": { "on": {} } } } }));
    assert_eq!(no_rules.flag("idle", json!({ "targeting_key": "u" })).reason, ResolveReason::NoSegmentMatch as i32);
}

#[test]
fn a_split_buckets_units_by_weight() {
    let kit = Kit::new(json!({ "flags": { "exp": {
        "variants": { "control": { "color": "grey" }, "treatment": { "color": "green" } },
        "rules": [{ "split": { "treatment": 30, "control": 70 } }],
    } } }));
    let mut control = 0;
    for key in keys(2000) {
        let got = kit.variant("exp", json!({ "targeting_key": key })).expect("everyone is in the split");
        // Weights lay out in variant-id order over 100 buckets salted with the rule's segment.
        let bucket = variant_bucket("segments/exp.rule-0", &key, 100).unwrap();
        assert_eq!(got, if bucket < 70 { "control" } else { "treatment" }, "{key}");
        control += usize::from(got == "control");
    }
    assert!((1300..=1500).contains(&control), "{control} of 2000 in control");
    // The same unit always gets the same variant; no unit, no bucket.
    assert_eq!(
        kit.variant("exp", json!({ "targeting_key": "user-7" })),
        kit.variant("exp", json!({ "targeting_key": "user-7" }))
    );
    assert_eq!(kit.variant("exp", json!({})), None);

    let fractional = Kit::new(json!({ "flags": { "f": {
        "variants": { "a": {}, "b": {} },
        "rules": [{ "split": { "a": 0.5, "b": 1.5 } }],
    } } }));
    let a =
        keys(2000).filter(|k| fractional.variant("f", json!({ "targeting_key": k })).as_deref() == Some("a")).count();
    assert!((430..=570).contains(&a), "{a} of 2000 got the quarter weight");
}

#[test]
fn a_rollout_admits_its_share_and_the_rest_fall_through() {
    let gradual = |share: f64| {
        Kit::new(json!({ "flags": { "gradual": {
            "variants": { "on": { "enabled": true }, "off": { "enabled": false } },
            "rules": [{ "variant": "on", "rollout": share }, { "variant": "off" }],
        } } }))
    };
    let admitted = |kit: &Kit| -> BTreeSet<String> {
        keys(2000)
            .filter(|k| {
                let v = kit.variant("gradual", json!({ "targeting_key": k }));
                assert!(v.is_some(), "the second rule catches everyone else");
                v.as_deref() == Some("on")
            })
            .collect()
    };
    let (quarter, half) = (gradual(0.25), gradual(0.5));
    let (q, h) = (admitted(&quarter), admitted(&half));
    assert!((430..=570).contains(&q.len()), "{} of 2000 admitted at 25%", q.len());
    assert!((900..=1100).contains(&h.len()), "{} of 2000 admitted at 50%", h.len());
    assert!(q.is_subset(&h), "widening a rollout keeps everyone already in it");
    // Without a unit a partial rollout admits nobody.
    assert_eq!(quarter.variant("gradual", json!({})).as_deref(), Some("off"));
    assert_eq!(gradual(1.0).variant("gradual", json!({})).as_deref(), Some("on"));

    // Rollouts of different flags pick different units.
    let two = Kit::new(json!({ "flags": {
        "x": { "variants": { "on": {} }, "rules": [{ "variant": "on", "rollout": 0.5 }] },
        "y": { "variants": { "on": {} }, "rules": [{ "variant": "on", "rollout": 0.5 }] },
    } }));
    let both = keys(2000)
        .filter(|k| {
            let r = two.response(&[], json!({ "targeting_key": k }), false);
            r.resolved_flags.iter().all(|f| !f.variant.is_empty())
        })
        .count();
    assert!((400..=600).contains(&both), "{both} of 2000 in both 50% rollouts: they should be independent");
}

#[test]
fn targeting_key_chooses_the_unit() {
    let kit = Kit::new(json!({ "flags": { "f": {
        "variants": { "a": {}, "b": {} },
        "rules": [{ "split": { "a": 50, "b": 50 }, "targetingKey": "user.id" }],
    } } }));
    let mut seen = BTreeSet::new();
    for key in keys(50) {
        let got = kit.variant("f", json!({ "targeting_key": "ignored", "user": { "id": key } })).unwrap();
        let bucket = variant_bucket("segments/f.rule-0", &key, 100).unwrap();
        assert_eq!(got, if bucket < 50 { "a" } else { "b" });
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2);
    // A rule whose unit is missing is skipped.
    assert_eq!(kit.variant("f", json!({ "targeting_key": "u1" })), None);
}

#[test]
fn sticky_rules_go_through_the_materialization_store() {
    let kit = Kit::new(json!({ "flags": { "exp": {
        "variants": { "a": {}, "b": {} },
        "rules": [{ "split": { "a": 50, "b": 50 }, "sticky": "exp-v1" }],
    } } }));
    let ctx = json!({ "targeting_key": "alice" });
    let without = kit.flag("exp", ctx.clone());
    assert_eq!(without.reason, ResolveReason::MaterializationNotSupported as i32);

    let resolve = |records: Vec<MaterializationRecord>| {
        let req =
            ResolveProcessRequest::static_materializations(kit.request_for(&["exp"], ctx.clone(), false), records);
        kit.engine.resolve(req).unwrap().into_resolved().unwrap()
    };
    let (fresh, writes) = resolve(vec![]);
    let fresh_variant = fresh.resolved_flags[0].variant.clone();
    assert!(fresh_variant.starts_with("flags/exp/variants/"));
    let record = |variant: &str| MaterializationRecord {
        unit: "alice".into(),
        materialization: "exp-v1".into(),
        rule: "flags/exp/rules/rule-0".into(),
        variant: variant.into(),
    };
    assert_eq!(writes, vec![record(&fresh_variant)], "a fresh assignment is remembered");

    let other = if fresh_variant.ends_with("/a") { "flags/exp/variants/b" } else { "flags/exp/variants/a" };
    let (sticky, writes) = resolve(vec![record(other)]);
    assert_eq!(sticky.resolved_flags[0].variant, other, "the stored assignment wins over the bucket");
    assert!(writes.is_empty());
}

#[test]
fn schemas_are_inferred_from_the_union_of_the_variants() {
    let kit = Kit::new(json!({ "flags": { "f": {
        "variants": {
            "a": { "n": 1, "label": "x", "theme": { "color": "red" }, "tags": ["t"], "gone": null },
            "b": { "n": 2.5, "extra": true, "theme": { "dark": false }, "tags": [], "count": 3 },
        },
        "rules": [{ "variant": "a" }],
    } } }));
    let f = kit.flag("f", json!({}));
    let expected = struct_schema([
        ("n", s_double()),
        ("label", s_string()),
        ("theme", s_struct([("color", s_string()), ("dark", s_bool())])),
        ("tags", s_list(s_string())),
        ("extra", s_bool()),
        ("count", s_int()),
    ]);
    assert_eq!(f.flag_schema, Some(expected));
    // The resolver fills what a variant leaves out with null, nested objects included.
    assert_eq!(
        from_struct(f.value.as_ref().unwrap()),
        json!({ "n": 1.0, "label": "x", "theme": { "color": "red", "dark": null }, "tags": ["t"], "gone": null,
                "extra": null, "count": null })
    );
}

#[test]
fn a_declared_schema_is_used_and_filled_in_from_the_variants() {
    let kit = Kit::new(json!({ "flags": { "f": {
        "schema": { "limit": "integer", "ratio": "number", "meta": "object", "items": "list", "nested": { "a": "string" },
                    "unused": "boolean" },
        "variants": {
            "v": { "limit": 3, "ratio": 1, "meta": { "k": "x" }, "items": [1, 2], "nested": { "a": "s" } },
            "w": {},
        },
        "rules": [{ "variant": "w" }],
    } } }));
    let f = kit.flag("f", json!({}));
    let expected = struct_schema([
        ("limit", s_int()),
        ("ratio", s_double()),
        ("meta", s_struct([("k", s_string())])),
        ("items", s_list(s_int())),
        ("nested", s_struct([("a", s_string())])),
        ("unused", s_bool()),
    ]);
    assert_eq!(f.flag_schema, Some(expected));
    let nulls = json!({ "limit": null, "ratio": null, "meta": null, "items": null, "nested": null, "unused": null });
    assert_eq!(from_struct(f.value.as_ref().unwrap()), nulls);
}

#[test]
fn archived_flags_are_never_resolved() {
    let kit = Kit::new(json!({ "flags": {
        "live": { "variants": { "on": {} }, "rules": [{ "variant": "on" }], "description": "still here" },
        "retired": { "variants": { "on": {} }, "rules": [{ "variant": "on" }], "archived": true },
    } }));
    let all = kit.response(&[], json!({}), false);
    let names: Vec<&str> = all.resolved_flags.iter().map(|f| f.flag.as_str()).collect();
    assert_eq!(names, ["flags/live"]);
    assert!(kit.response(&["retired"], json!({}), false).resolved_flags.is_empty());
}

#[test]
fn the_state_is_the_cdn_payload_for_one_client() {
    let payload = build_test_state(
        json!({ "clientSecret": "s3cret", "accountId": "acme", "flags": {
            "a": { "variants": { "on": { "x": 1 } }, "description": "first" },
            "b": { "variants": {} },
        } })
        .to_string(),
    )
    .unwrap();
    let envelope = ClientResolverState::decode(&payload[..]).unwrap();
    assert_eq!(envelope.account, "acme");
    let state = ResolverState::decode(envelope.state.as_slice()).unwrap();
    let flags: Vec<(&str, &str, &[String])> =
        state.flags.iter().map(|f| (f.name.as_str(), f.description.as_str(), f.clients.as_slice())).collect();
    let client = vec![format!("clients/{TEST_CLIENT}")];
    assert_eq!(flags, [("flags/a", "first", client.as_slice()), ("flags/b", "", client.as_slice())]);
    assert_eq!(state.clients.len(), 1);
    assert_eq!(state.client_credentials.len(), 1);

    let defaults = ClientResolverState::decode(&build_test_state("{}".into()).unwrap()[..]).unwrap();
    assert_eq!(defaults.account, DEFAULT_ACCOUNT);

    // Only the described secret is accepted.
    let kit = Kit::new(json!({ "clientSecret": "s3cret", "flags": { "a": { "variants": { "on": {} } } } }));
    assert_eq!(kit.response(&[], json!({}), false).resolved_flags.len(), 1);
    let wrong = request(DEFAULT_CLIENT_SECRET, &[], to_struct(&json!({})), false);
    assert!(kit.engine.resolve(ResolveProcessRequest::without_materializations(wrong)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_host_serves_a_test_state_and_the_demo_state() {
    let host = |payload: Vec<u8>, secret: &str| {
        let config = HostConfig { offline: true, initial_state: Some(payload), ..HostConfig::new(secret) };
        let engine: Arc<dyn Engine> = Arc::new(WasmEngine::new(ours().clone(), WasmEngineConfig::default()).unwrap());
        ResolverHost::new(engine, config).expect("the payload is a valid initial state")
    };
    let resolve = |h: &ResolverHost, secret: &str, ctx: Json| {
        let req = request(secret, &[], to_struct(&ctx), false);
        h.engine().resolve(ResolveProcessRequest::without_materializations(req)).unwrap().into_resolved().unwrap().0
    };

    let description = on_off(json!([{ "variant": "on", "when": { "attribute": "country", "equals": "SE" } }]));
    let h = host(build_test_state(description.to_string()).unwrap().to_vec(), DEFAULT_CLIENT_SECRET);
    h.start().unwrap();
    h.wait_ready(Duration::from_millis(10)).await.unwrap();
    let r = resolve(&h, DEFAULT_CLIENT_SECRET, json!({ "country": "SE" }));
    assert_eq!(r.resolved_flags[0].variant, "flags/f/variants/on");
    h.close(Duration::from_secs(1)).await.unwrap();

    let secret = state_builder::demo::DEMO_SECRET;
    let demo = host(demo_state().to_vec(), secret);
    let r = resolve(&demo, secret, json!({ "targeting_key": "alice", "country": "SE" }));
    let new_ui = r.resolved_flags.iter().find(|f| f.flag == "flags/new-ui").expect("the demo has new-ui");
    assert_eq!(new_ui.variant, "flags/new-ui/variants/on");
}

// ---------------------------------------------------------------------------------------------
// Errors

fn error_of(description: Json) -> String {
    match state_from_description(&description.to_string()) {
        Ok(_) => panic!("accepted {description}"),
        Err(e) => e.to_string(),
    }
}

/// A flag `f` with variants `on`/`off` and one rule.
fn rule_error(rule: Json) -> String {
    error_of(on_off(json!([rule])))
}

fn when_error(when: Json) -> String {
    rule_error(json!({ "variant": "on", "when": when }))
}

#[test]
fn document_errors_name_their_path() {
    assert!(state_from_description("{ nope").unwrap_err().to_string().starts_with("description: not valid JSON: "));
    assert_eq!(error_of(json!([])), "description: expected an object, got a list");
    assert_eq!(
        error_of(json!({ "flagz": {} })),
        "description: unknown field `flagz`, expected one of `clientSecret`, `accountId`, `flags`"
    );
    assert_eq!(error_of(json!({ "clientSecret": "" })), "clientSecret: must not be empty");
    assert_eq!(error_of(json!({ "clientSecret": 5 })), "clientSecret: invalid type: integer `5`, expected a string");
    assert_eq!(error_of(json!({ "accountId": "a/b" })), "accountId: must be a non-empty id without '/'");
    assert_eq!(error_of(json!({ "flags": [] })), "flags: invalid type: sequence, expected a map");
    assert_eq!(error_of(json!({ "flags": { "f": true } })), "flags[\"f\"]: expected an object, got a boolean");

    let rule = "use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'";
    for bad in ["New_UI", "new.ui", "-x", "x-", "9lives", ""] {
        let e = error_of(json!({ "flags": { bad: { "variants": {} } } }));
        assert_eq!(e, format!("flags[{bad:?}]: {bad:?} is not a valid flag name: {rule}"));
    }
    assert_eq!(
        error_of(json!({ "flags": { "f": { "variants": { "On": {} } } } })),
        format!("flags[\"f\"].variants[\"On\"]: \"On\" is not a valid variant id: {rule}")
    );
    assert_eq!(
        error_of(json!({ "flags": { "f": { "variants": { "on": true } } } })),
        "flags[\"f\"].variants[\"on\"]: a variant's value must be an object, got a boolean"
    );
    assert!(error_of(json!({ "flags": { "f": { "rule": [] } } }))
        .starts_with("flags[\"f\"]: unknown field `rule`, expected one of `variants`, `schema`, `rules`"));
    assert_eq!(
        error_of(json!({ "flags": { "f": { "rules": {} } } })),
        "flags[\"f\"].rules: invalid type: map, expected a sequence"
    );
    assert_eq!(
        error_of(json!({ "flags": { "f": { "archived": "yes" } } })),
        "flags[\"f\"].archived: invalid type: string \"yes\", expected a boolean"
    );
}

#[test]
fn rule_errors_name_their_path() {
    assert_eq!(
        rule_error(json!({ "variant": "blue" })),
        "flags[\"f\"].rules[0].variant: unknown variant \"blue\" (variants: off, on)"
    );
    // The example from the documentation: the second rule's split.
    let e = error_of(json!({ "flags": { "new-ui": {
        "variants": { "on": {}, "off": {} },
        "rules": [{ "variant": "on" }, { "split": { "on": 50, "blue": 50 } }],
    } } }));
    assert_eq!(e, "flags[\"new-ui\"].rules[1].split: unknown variant \"blue\" (variants: off, on)");
    assert_eq!(
        rule_error(json!({ "variant": "on", "split": { "on": 1 } })),
        "flags[\"f\"].rules[0]: give either \"variant\" or \"split\", not both"
    );
    assert_eq!(rule_error(json!({ "when": { "all": [] } })), "flags[\"f\"].rules[0]: needs \"variant\" or \"split\"");
    assert_eq!(rule_error(json!({ "split": {} })), "flags[\"f\"].rules[0].split: needs at least one variant");
    for (weight, shown) in [(json!(0), "0"), (json!(-5), "-5"), (json!("50"), "\"50\"")] {
        assert_eq!(
            rule_error(json!({ "split": { "on": 50, "off": weight } })),
            format!("flags[\"f\"].rules[0].split[\"off\"]: weight must be a positive number, got {shown}")
        );
    }
    assert_eq!(
        rule_error(json!({ "split": { "on": 1e-9, "off": 1 } })),
        "flags[\"f\"].rules[0].split[\"on\"]: weight 0.000000001 is too small next to the others (total 1.000000001)"
    );
    for share in [json!(0), json!(1.5), json!(-0.1)] {
        assert_eq!(
            rule_error(json!({ "variant": "on", "rollout": share })),
            format!("flags[\"f\"].rules[0].rollout: must be in (0, 1], got {}", share.as_f64().unwrap())
        );
    }
    assert_eq!(
        rule_error(json!({ "variant": "on", "rollout": "half" })),
        "flags[\"f\"].rules[0].rollout: invalid type: string \"half\", expected f64"
    );
    assert!(rule_error(json!({ "variant": "on", "percent": 5 }))
        .starts_with("flags[\"f\"].rules[0]: unknown field `percent`, expected one of `name`, `variant`, `split`"));
    assert!(rule_error(json!({ "variant": "on", "name": "Rule 1" }))
        .starts_with("flags[\"f\"].rules[0].name: \"Rule 1\" is not a valid rule name: use"));
    assert_eq!(
        error_of(on_off(json!([{ "name": "r", "variant": "on" }, { "name": "r", "variant": "off" }]))),
        "flags[\"f\"].rules[1].name: another rule of this flag is named \"r\""
    );
    assert_eq!(
        error_of(on_off(json!([{ "variant": "on" }, { "name": "rule-0", "variant": "off" }]))),
        "flags[\"f\"].rules[1].name: another rule of this flag is named \"rule-0\""
    );
    assert_eq!(
        rule_error(json!({ "variant": "on", "targetingKey": "" })),
        "flags[\"f\"].rules[0].targetingKey: \"\" is not a context path like \"user.id\""
    );
    assert_eq!(
        rule_error(json!({ "variant": "on", "sticky": "" })),
        "flags[\"f\"].rules[0].sticky: the materialization name must not be empty"
    );
    assert_eq!(
        error_of(json!({ "flags": { "f": { "rules": [{ "variant": "on" }] } } })),
        "flags[\"f\"].rules[0].variant: unknown variant \"on\" (the flag has no variants)"
    );
    assert_eq!(error_of(on_off(json!(["on"]))), "flags[\"f\"].rules[0]: expected an object, got a string");
}

#[test]
fn condition_errors_name_their_path() {
    let at = |suffix: &str| format!("flags[\"f\"].rules[0].when{suffix}");
    let operators = "equals, in, gt/gte/lt/lte, versionGt/versionGte/versionLt/versionLte or after/before";
    assert!(when_error(json!({ "attribute": "a", "equal": 1 }))
        .starts_with(&format!("{}: unknown field `equal`, expected one of `attribute`, `equals`", at(""))));
    assert_eq!(when_error(json!({ "attribute": "a" })), format!("{}: needs an operator: {operators}", at("")));
    assert_eq!(
        when_error(json!({ "attribute": "a", "equals": 1, "gt": 0 })),
        format!("{}: combines operators of different kinds; use {{\"all\": [...]}} to require several", at(""))
    );
    assert_eq!(
        when_error(json!({ "attribute": "a", "equals": 1, "not": { "attribute": "b", "equals": 2 } })),
        format!("{}: an \"attribute\" condition cannot also hold \"all\", \"any\" or \"not\"; nest it instead", at(""))
    );
    assert!(when_error(json!({ "any": [], "not": { "attribute": "b", "equals": 2 } }))
        .starts_with(&format!("{}: needs exactly one of \"all\", \"any\", \"not\"", at(""))));
    assert!(when_error(json!({ "gt": 1 })).starts_with(&format!("{}: needs exactly one of", at(""))));
    assert_eq!(
        when_error(json!({ "attribute": "a", "gt": 1, "gte": 1 })),
        format!("{}: give \"gt\" or \"gte\", not both", at(""))
    );
    assert_eq!(
        when_error(json!({ "attribute": "a", "versionLt": "1.0", "versionLte": "2.0" })),
        format!("{}: give \"versionLt\" or \"versionLte\", not both", at(""))
    );
    assert_eq!(
        when_error(json!({ "attribute": "a", "gte": "18" })),
        format!("{}: invalid type: string \"18\", expected f64", at(".gte"))
    );
    assert_eq!(when_error(json!({ "attribute": "a", "in": [] })), format!("{}: needs at least one value", at(".in")));
    assert_eq!(
        when_error(json!({ "attribute": "a", "in": ["x", 1] })),
        format!("{}: values must all be of one type (strings, numbers or booleans)", at(".in"))
    );
    assert_eq!(
        when_error(json!({ "attribute": "a", "in": ["x", ["y"]] })),
        format!("{}: expected a string, number or boolean, got a list", at(".in[1]"))
    );
    for (value, kind) in [(json!(null), "null"), (json!({}), "an object")] {
        assert_eq!(
            when_error(json!({ "attribute": "a", "equals": value })),
            format!("{}: expected a string, number or boolean, got {kind}", at(".equals"))
        );
    }
    for bad in ["v2", "2", "1.2.3.4.5", "1.x.0", ""] {
        assert_eq!(
            when_error(json!({ "attribute": "a", "versionGte": bad })),
            format!("{}: {bad:?} is not a version like \"2.0.0\" (2 to 4 numbers)", at(".versionGte"))
        );
    }
    for bad in ["yesterday", "2026-13-01", "2026-01-01T00:00:00", "2026-01-01T25:00:00Z"] {
        assert_eq!(
            when_error(json!({ "attribute": "a", "after": bad })),
            format!("{}: {bad:?} is not an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\"", at(".after"))
        );
    }
    for bad in ["", "a..b", ".a", "a."] {
        assert_eq!(
            when_error(json!({ "attribute": bad, "equals": 1 })),
            format!("{}: {bad:?} is not a context path like \"app.version\"", at(".attribute"))
        );
    }
    assert_eq!(
        when_error(json!({ "all": [{ "attribute": "a", "equals": 1 }, { "not": { "any": [{ "attribute": "b" }] } }] })),
        format!("{}: needs an operator: {operators}", at(".all[1].not.any[0]"))
    );
    assert_eq!(when_error(json!("country == SE")), format!("{}: expected an object, got a string", at("")));
}

#[test]
fn schema_errors_name_their_path() {
    let flag = |variants: Json| error_of(json!({ "flags": { "f": { "variants": variants } } }));
    assert_eq!(
        flag(json!({ "a": { "size": 1 }, "b": { "size": "L" } })),
        "flags[\"f\"].variants[\"b\"].size: is a string here but an integer elsewhere: a field has one type"
    );
    assert_eq!(
        flag(json!({ "a": { "theme": { "color": "red" } }, "b": { "theme": { "color": 1 } } })),
        "flags[\"f\"].variants[\"b\"].theme.color: is an integer here but a string elsewhere: a field has one type"
    );
    assert_eq!(
        flag(json!({ "a": { "tags": [1, "x"] } })),
        "flags[\"f\"].variants[\"a\"].tags[1]: is a string here but an integer elsewhere: a field has one type"
    );
    assert_eq!(
        flag(json!({ "a": { "theme": {} }, "b": { "theme": [] } })),
        "flags[\"f\"].variants[\"b\"].theme: is a list here but an object elsewhere: a field has one type"
    );

    let declared = |schema: Json, variant: Json| {
        error_of(json!({ "flags": { "f": { "schema": schema, "variants": { "on": variant } } } }))
    };
    assert_eq!(
        declared(json!({ "limit": "integer" }), json!({ "limit": 2.5 })),
        "flags[\"f\"].variants[\"on\"].limit: the schema says an integer, got 2.5"
    );
    assert_eq!(
        declared(json!({ "limit": "integer" }), json!({ "limit": 2, "extra": true })),
        "flags[\"f\"].variants[\"on\"].extra: is not in the flag's schema"
    );
    assert_eq!(
        declared(json!({ "theme": { "color": "string" } }), json!({ "theme": { "color": false } })),
        "flags[\"f\"].variants[\"on\"].theme.color: the schema says a string, got false"
    );
    assert_eq!(
        declared(json!({ "limit": "int" }), json!({})),
        "flags[\"f\"].schema.limit: unknown type \"int\" (boolean, string, integer, number, object, list, or an object of fields)"
    );
    assert_eq!(
        declared(json!({ "limit": 3 }), json!({})),
        "flags[\"f\"].schema.limit: expected a type name or an object of fields, got a number"
    );
}

/// The test kit's state as the addon's `buildTestState` returns it. Its error codes are pinned
/// in `__test__/errors.test.mjs`.
fn build_test_state(description: String) -> Result<Vec<u8>, DescriptionError> {
    state_from_description(&description).map(|s| s.encode_client_resolver_state())
}

fn demo_state() -> Vec<u8> {
    state_builder::demo_state().encode_client_resolver_state()
}

#[test]
fn the_napi_export_reports_invalid_options() {
    let e = build_test_state("{\"flags\": 1}".into()).expect_err("rejected");
    assert_eq!(e.to_string(), "flags: invalid type: integer `1`, expected a map");
}

// ---------------------------------------------------------------------------------------------
// Logs

fn decoded(batch: Vec<u8>) -> Json {
    serde_json::to_value(flag_logs(&batch).expect("decodes")).expect("JSON")
}

#[test]
fn flushed_logs_decode_into_exposures_counts_and_telemetry() {
    let config = WasmEngineConfig { pool_size: 1, clock: Clock::Fixed(ORACLE_TIME), ..Default::default() };
    let kit = Kit::with_config(
        json!({ "flags": {
            "new-ui": {
                "variants": { "on": { "enabled": true }, "off": { "enabled": false } },
                "rules": [
                    { "name": "targeted", "variant": "on", "when": { "attribute": "country", "equals": "SE" } },
                    { "name": "rollout", "split": { "on": 50, "off": 50 } },
                ],
            },
            "banner": {
                "variants": { "shown": { "visible": true } },
                "rules": [{ "variant": "shown", "when": { "attribute": "plan", "equals": "pro" } }],
            },
        } }),
        config,
    );
    let alice = kit.response(&[], json!({ "targeting_key": "alice", "country": "SE" }), true);
    let bob = kit.response(&[], json!({ "targeting_key": "bob", "country": "DK" }), true);
    let carol = kit.response(&[], json!({ "targeting_key": "carol", "plan": "pro" }), false);
    let apply = ApplyFlagsRequest {
        flags: vec![AppliedFlag { flag: "flags/banner".into(), apply_time: Some(ORACLE_TIME) }],
        client_secret: kit.secret.clone(),
        resolve_token: carol.resolve_token.clone(),
        send_time: Some(ORACLE_TIME),
        sdk: None,
    };
    kit.engine.apply(&apply).unwrap();
    kit.engine.register_resolve(ResolveReason::Match as i32, 250);

    let batches = kit.engine.flush_logs();
    assert_eq!(batches.len(), 1, "one instance, one small batch");
    let logs = decoded(batches.into_iter().next().unwrap());

    let client = json!({ "client": "clients/test-client", "clientCredential": "clients/test-client/clientCredentials/test-client-key" });
    let sdk = json!({ "id": "SDK_ID_JS_LOCAL_SERVER_PROVIDER", "version": "0.1.0" });
    let bob_bucket = variant_bucket("segments/new-ui.rollout", "bob", 100).unwrap();
    // Split entries lay out in variant-id order: off [0, 50), on [50, 100).
    let (bob_variant, bob_assignment) = if bob_bucket < 50 { ("off", "rollout-0") } else { ("on", "rollout-1") };
    let exposure = |resolve_id: &str, flags: Json| {
        let mut e = json!({ "resolveId": resolve_id, "sdk": sdk, "flags": flags });
        e.as_object_mut().unwrap().extend(client.as_object().unwrap().clone());
        e
    };
    let expected = json!([
        exposure(
            &alice.resolve_id,
            json!([{
                "flag": "flags/new-ui", "variant": "flags/new-ui/variants/on", "segment": "segments/new-ui.targeted",
                "targetingKey": "alice", "assignmentId": "targeted-all", "rule": "flags/new-ui/rules/targeted",
                "applyTime": "2025-09-01T12:00:00Z", "fallthroughAssignments": [],
            }])
        ),
        exposure(
            &bob.resolve_id,
            json!([{
                "flag": "flags/new-ui", "variant": format!("flags/new-ui/variants/{bob_variant}"),
                "segment": "segments/new-ui.rollout", "targetingKey": "bob", "assignmentId": bob_assignment,
                "rule": "flags/new-ui/rules/rollout", "applyTime": "2025-09-01T12:00:00Z", "fallthroughAssignments": [],
            }])
        ),
        exposure(
            &carol.resolve_id,
            json!([{
                "flag": "flags/banner", "variant": "flags/banner/variants/shown", "segment": "segments/banner.rule-0",
                "targetingKey": "carol", "assignmentId": "rule-0-all", "rule": "flags/banner/rules/rule-0",
                "applyTime": "2025-09-01T12:00:00Z", "fallthroughAssignments": [],
            }])
        ),
    ]);
    assert_eq!(logs["flagAssigned"], expected, "banner was no match for alice and bob: not exposed");

    // Every resolve is counted, exposed or not; no-match counts have no variant.
    assert_eq!(logs["flagResolveInfo"][0]["flag"], "flags/banner");
    assert_eq!(
        logs["flagResolveInfo"][0]["variants"],
        json!([{ "count": 2 }, { "variant": "flags/banner/variants/shown", "count": 1 }])
    );
    assert_eq!(
        logs["flagResolveInfo"][0]["rules"],
        json!([{ "rule": "flags/banner/rules/rule-0", "count": 1, "assignments": [{ "assignmentId": "rule-0-all", "count": 1 }] }])
    );
    let new_ui = &logs["flagResolveInfo"][1];
    assert_eq!(new_ui["flag"], "flags/new-ui");
    let total: i64 = new_ui["variants"].as_array().unwrap().iter().map(|v| v["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 3);
    assert_eq!(
        new_ui["rules"][1],
        json!({ "rule": "flags/new-ui/rules/targeted", "count": 1,
        "assignments": [{ "assignmentId": "targeted-all", "count": 1 }] })
    );

    let clients = logs["clientResolveInfo"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["client"], client["client"]);
    assert_eq!(clients[0]["clientCredential"], client["clientCredential"]);
    assert!(clients[0]["schemas"].as_array().unwrap().contains(&json!({
        "fields": { "country": "STRING_KIND", "targeting_key": "STRING_KIND" },
        "semanticTypes": { "country": "country" },
    })));

    let telemetry = &logs["telemetry"];
    assert_eq!(telemetry["resolveRate"], json!([{ "reason": "RESOLVE_REASON_MATCH", "count": 1 }]));
    assert_eq!(telemetry["resolveLatency"], json!({ "count": 1, "sum": 250 }));
    assert_eq!(telemetry["sdk"], sdk);
    assert!(!telemetry["resolverVersion"].as_str().unwrap().is_empty());
    assert!(telemetry["memoryBytes"].as_u64().unwrap() > 0);

    // Nothing new happened: nothing worth uploading.
    assert!(kit.engine.flush_logs().is_empty());
}

#[test]
fn a_split_exposure_names_its_targeting_key_selector() {
    let config = WasmEngineConfig { pool_size: 1, ..Default::default() };
    let kit = Kit::with_config(
        json!({ "flags": { "f": {
            "variants": { "a": {}, "b": {} },
            "rules": [{ "split": { "a": 1, "b": 1 }, "targetingKey": "user.id" }],
        } } }),
        config,
    );
    kit.response(&[], json!({ "user": { "id": "u-42" } }), true);
    let batches = kit.engine.flush_logs();
    let logs = decoded(batches.into_iter().next().expect("a batch"));
    let exposed = &logs["flagAssigned"][0]["flags"][0];
    assert_eq!(exposed["targetingKey"], "u-42");
    assert_eq!(exposed["targetingKeySelector"], "user.id");
    assert!(exposed.get("reason").is_none(), "a variant was assigned");
}

#[test]
fn empty_and_broken_batches() {
    assert_eq!(decoded(Vec::new()), json!({ "flagAssigned": [], "flagResolveInfo": [], "clientResolveInfo": [] }));
    flag_logs(&[0x0a, 0xff, 0xff]).expect_err("rejected");
}
