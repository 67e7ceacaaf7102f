mod common;

use std::collections::BTreeSet;

use common::{load, resolve};
use confidence_resolver::proto::confidence::flags::admin::v1::{
    flag::rule::assignment::Assignment as AKind, resolver_state::packed_bitset, ResolverState,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveReason;
use confidence_resolver::proto::confidence::flags::types::v1::{
    expression::Expression as EKind,
    targeting::{
        criterion::{attribute_criterion::Rule as R, Criterion as CKind},
        inner_rule::Rule as IR,
        range_rule::{End, Start},
        value::Value as TV,
        Value as TValue,
    },
    Expression,
};
use confidence_resolver::proto::google::{value::Kind, Struct, Value};
use prost::Message;
use state_builder::random::{Generator, Options, Rng};

fn tv_kind(v: &TValue, out: &mut BTreeSet<&'static str>) {
    out.insert(match &v.value {
        Some(TV::BoolValue(_)) => "v:bool",
        Some(TV::NumberValue(_)) => "v:number",
        Some(TV::StringValue(_)) => "v:string",
        Some(TV::TimestampValue(_)) => "v:timestamp",
        Some(TV::VersionValue(_)) => "v:version",
        Some(TV::ListValue(_)) => "v:list",
        None => "v:none",
    });
}

fn expr_kinds(e: &Expression, out: &mut BTreeSet<&'static str>) {
    match &e.expression {
        Some(EKind::Ref(_)) => {
            out.insert("e:ref");
        }
        Some(EKind::Not(inner)) => {
            out.insert("e:not");
            expr_kinds(inner, out);
        }
        Some(EKind::And(ops)) | Some(EKind::Or(ops)) => {
            out.insert(if matches!(e.expression, Some(EKind::And(_))) { "e:and" } else { "e:or" });
            ops.operands.iter().for_each(|o| expr_kinds(o, out));
        }
        None => {
            out.insert("e:unset");
        }
    }
}

fn range_kinds(start: &Option<Start>, end: &Option<End>, out: &mut BTreeSet<&'static str>) {
    match start {
        Some(Start::StartInclusive(v)) => {
            out.insert("range:start-incl");
            tv_kind(v, out);
        }
        Some(Start::StartExclusive(v)) => {
            out.insert("range:start-excl");
            tv_kind(v, out);
        }
        None => {}
    }
    match end {
        Some(End::EndInclusive(v)) => {
            out.insert("range:end-incl");
            tv_kind(v, out);
        }
        Some(End::EndExclusive(v)) => {
            out.insert("range:end-excl");
            tv_kind(v, out);
        }
        None => {}
    }
}

/// Everything the state uses, as labels.
fn features(pb: &ResolverState, out: &mut BTreeSet<&'static str>) {
    for s in &pb.segments_no_bitsets {
        let Some(t) = &s.targeting else { continue };
        if let Some(e) = &t.expression {
            expr_kinds(e, out);
        }
        for c in t.criteria.values() {
            match &c.criterion {
                Some(CKind::Segment(_)) => {
                    out.insert("c:segment");
                }
                Some(CKind::MaterializedSegment(_)) => {
                    out.insert("c:materialized");
                }
                None => {
                    out.insert("c:unset");
                }
                Some(CKind::Attribute(a)) => {
                    out.insert("c:attribute");
                    let inner = match &a.rule {
                        Some(R::EqRule(r)) => {
                            out.insert("r:eq");
                            r.value.iter().for_each(|v| tv_kind(v, out));
                            None
                        }
                        Some(R::SetRule(r)) => {
                            out.insert("r:set");
                            r.values.iter().for_each(|v| tv_kind(v, out));
                            None
                        }
                        Some(R::RangeRule(r)) => {
                            out.insert("r:range");
                            range_kinds(&r.start, &r.end, out);
                            None
                        }
                        Some(R::AnyRule(r)) => {
                            out.insert("r:any");
                            r.rule.as_ref()
                        }
                        Some(R::AllRule(r)) => {
                            out.insert("r:all");
                            r.rule.as_ref()
                        }
                        Some(R::StartsWithRule(_)) => {
                            out.insert("r:starts_with");
                            None
                        }
                        Some(R::EndsWithRule(_)) => {
                            out.insert("r:ends_with");
                            None
                        }
                        Some(R::ContainsRule(_)) => {
                            out.insert("r:contains");
                            None
                        }
                        None => {
                            out.insert("r:unset");
                            None
                        }
                    };
                    match inner.and_then(|i| i.rule.as_ref()) {
                        Some(IR::EqRule(_)) => out.insert("inner:eq"),
                        Some(IR::SetRule(_)) => out.insert("inner:set"),
                        Some(IR::RangeRule(r)) => {
                            range_kinds(&r.start, &r.end, out);
                            out.insert("inner:range")
                        }
                        Some(IR::StartsWithRule(_)) => out.insert("inner:starts_with"),
                        Some(IR::EndsWithRule(_)) => out.insert("inner:ends_with"),
                        Some(IR::ContainsRule(_)) => out.insert("inner:contains"),
                        None => false,
                    };
                }
            }
        }
    }
    for b in &pb.bitsets {
        out.insert(match b.bitset {
            Some(packed_bitset::Bitset::FullBitset(_)) => "bitset:full",
            Some(packed_bitset::Bitset::GzippedBitset(_)) => "bitset:gzipped",
            None => "bitset:none",
        });
    }
    for f in &pb.flags {
        out.insert(match f.state {
            1 => "flag:active",
            2 => "flag:archived",
            _ => "flag:unspecified",
        });
        if f.schema.is_none() {
            out.insert("flag:no-schema");
        }
        if pb.clients.iter().any(|c| !f.clients.contains(&c.name)) {
            out.insert("flag:not-for-some-client");
        }
        for r in &f.rules {
            if r.targeting_key_selector.contains('.') {
                out.insert("rule:nested-selector");
            } else if !r.targeting_key_selector.is_empty() {
                out.insert("rule:selector");
            }
            if !r.environments.is_empty() {
                out.insert("rule:environments");
            }
            if !r.enabled {
                out.insert("rule:disabled");
            }
            if r.materialization_spec.is_some() {
                out.insert("rule:materialization");
            }
            for a in r.assignment_spec.iter().flat_map(|s| &s.assignments) {
                out.insert(match a.assignment {
                    Some(AKind::Variant(_)) => "a:variant",
                    Some(AKind::Fallthrough(_)) => "a:fallthrough",
                    Some(AKind::ClientDefault(_)) => "a:client_default",
                    None => "a:unset",
                });
            }
        }
    }
    if pb.client_credentials.iter().any(|c| !c.environments.is_empty()) {
        out.insert("credential:environments");
    }
}

fn value_kinds(v: &Value, out: &mut BTreeSet<&'static str>) {
    match &v.kind {
        None => {
            out.insert("ctx:unset");
        }
        Some(Kind::NullValue(_)) => {
            out.insert("ctx:null");
        }
        Some(Kind::BoolValue(_)) => {
            out.insert("ctx:bool");
        }
        Some(Kind::NumberValue(n)) => {
            out.insert(if n.is_nan() {
                "ctx:nan"
            } else if n.is_infinite() {
                "ctx:inf"
            } else if n.fract() != 0.0 {
                "ctx:fraction"
            } else if n.abs() > 1e18 {
                "ctx:huge"
            } else {
                "ctx:integer"
            });
        }
        Some(Kind::StringValue(s)) => {
            out.insert(if s.parse::<f64>().is_ok() {
                "ctx:numeric-string"
            } else if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') && s.contains('T') {
                "ctx:rfc3339"
            } else if s.split('.').count() == 3 && s.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                "ctx:version"
            } else {
                "ctx:string"
            });
        }
        Some(Kind::ListValue(l)) => {
            out.insert("ctx:list");
            l.values.iter().for_each(|v| value_kinds(v, out));
        }
        Some(Kind::StructValue(s)) => {
            out.insert("ctx:object");
            s.fields.values().for_each(|v| value_kinds(v, out));
        }
    }
}

#[test]
fn same_seed_same_state() {
    let a = Generator::new(42).scenario();
    let b = Generator::new(42).scenario();
    assert_eq!(a.state.encode(), b.state.encode());
    // Compared as bytes: contexts may hold NaN, which is never equal to itself.
    let bytes = |s: &state_builder::random::Scenario| -> Vec<Vec<u8>> {
        s.contexts(1, 20).iter().map(|c| c.encode_to_vec()).collect()
    };
    assert_eq!(bytes(&a), bytes(&b));
    let c = Generator::new(43).scenario();
    assert_ne!(a.state.encode(), c.state.encode());
}

#[test]
fn random_states_load_with_every_option_set() {
    let variants = [
        Options::default(),
        Options { bloom_filters: true, materializations: true, request_errors: true, ..Options::default() },
        Options { edge_cases: false, partial_bitsets: false, flags: 3, segments: 2, clients: 1, ..Options::default() },
    ];
    for opts in variants {
        for seed in 0..15 {
            let s = Generator::with_options(seed, opts.clone()).scenario();
            load(&s.state);
            assert!(!s.secrets.is_empty());
        }
    }
}

#[test]
fn random_states_cover_every_feature() {
    let mut seen = BTreeSet::new();
    let opts = Options { bloom_filters: true, materializations: true, ..Options::default() };
    let mut gen = Generator::with_options(1, opts);
    for _ in 0..30 {
        features(&gen.scenario().state.proto, &mut seen);
    }
    let expected = [
        "c:attribute",
        "c:segment",
        "c:materialized",
        "c:unset",
        "r:eq",
        "r:set",
        "r:range",
        "r:any",
        "r:all",
        "r:starts_with",
        "r:ends_with",
        "r:contains",
        "r:unset",
        "inner:eq",
        "inner:set",
        "inner:range",
        "inner:starts_with",
        "inner:ends_with",
        "inner:contains",
        "range:start-incl",
        "range:start-excl",
        "range:end-incl",
        "range:end-excl",
        "v:bool",
        "v:number",
        "v:string",
        "v:timestamp",
        "v:version",
        "v:list",
        "v:none",
        "e:ref",
        "e:not",
        "e:and",
        "e:or",
        "bitset:full",
        "bitset:gzipped",
        "flag:active",
        "flag:archived",
        "flag:no-schema",
        "flag:not-for-some-client",
        "rule:nested-selector",
        "rule:selector",
        "rule:environments",
        "rule:disabled",
        "rule:materialization",
        "a:variant",
        "a:fallthrough",
        "a:client_default",
        "a:unset",
        "credential:environments",
    ];
    let missing: Vec<_> = expected.iter().filter(|e| !seen.contains(*e)).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
}

#[test]
fn random_contexts_cover_value_shapes() {
    let mut seen = BTreeSet::new();
    let mut gen = Generator::new(3);
    for i in 0..5 {
        for ctx in gen.scenario().contexts(i, 100) {
            value_kinds(&Value { kind: Some(Kind::StructValue(ctx)) }, &mut seen);
        }
    }
    for k in [
        "ctx:null",
        "ctx:unset",
        "ctx:bool",
        "ctx:nan",
        "ctx:inf",
        "ctx:fraction",
        "ctx:huge",
        "ctx:integer",
        "ctx:numeric-string",
        "ctx:rfc3339",
        "ctx:version",
        "ctx:string",
        "ctx:list",
        "ctx:object",
    ] {
        assert!(seen.contains(k), "{k} never generated: {seen:?}");
    }
}

fn run(opts: Options, seeds: std::ops::Range<u64>, per_seed: usize) -> BTreeSet<i32> {
    let mut reasons = BTreeSet::new();
    for seed in seeds {
        let s = Generator::with_options(seed, opts.clone()).scenario();
        let state = load(&s.state);
        for req in s.requests(seed + 1000, per_seed) {
            let r = resolve(&state, req.clone()).unwrap_or_else(|e| panic!("seed {seed}: {e}\nrequest: {req:?}"));
            for f in r.resolved_flags {
                if f.reason == ResolveReason::Match as i32 && f.variant.is_empty() {
                    reasons.insert(-1); // client default
                }
                reasons.insert(f.reason);
            }
        }
    }
    reasons
}

#[test]
fn random_requests_resolve_without_error() {
    let reasons = run(Options::default(), 0..8, 150);
    for r in
        [ResolveReason::Match as i32, ResolveReason::NoSegmentMatch as i32, ResolveReason::TargetingKeyError as i32, -1]
    {
        assert!(reasons.contains(&r), "reason {r} never seen: {reasons:?}");
    }
}

#[test]
fn bloom_and_materialization_options_resolve_without_error() {
    let opts = Options { bloom_filters: true, materializations: true, ..Options::default() };
    let reasons = run(opts, 0..6, 100);
    assert!(reasons.contains(&(ResolveReason::MaterializationNotSupported as i32)));
}

#[test]
fn request_error_option_produces_some_errors() {
    let opts = Options { request_errors: true, ..Options::default() };
    let (mut ok, mut err) = (0, 0);
    for seed in 0..8 {
        let s = Generator::with_options(seed, opts.clone()).scenario();
        let state = load(&s.state);
        let mut rng = Rng::new(seed);
        for _ in 0..100 {
            match resolve(&state, s.request(&mut rng)) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}

#[test]
fn contexts_are_structs_with_targeting_keys_mostly() {
    let s = Generator::new(5).scenario();
    let ctxs: Vec<Struct> = s.contexts(2, 200);
    let keyed = ctxs.iter().filter(|c| c.fields.contains_key("targeting_key")).count();
    assert!(keyed > 120 && keyed < 200, "{keyed}");
}
