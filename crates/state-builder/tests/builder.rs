mod common;

use common::{find, load, resolve, resolve_all};
use confidence_resolver::proto::confidence::flags::admin::v1::resolver_state::packed_bitset;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{ResolveFlagsRequest, ResolveReason};
use confidence_resolver::ResolverState;
use prost::Message;
use state_builder::value::get_path;
use state_builder::*;

const SECRET: &str = "s3cr3t-web-key";

fn base() -> StateBuilder {
    StateBuilder::new("acme").client(
        ClientBuilder::new("web").credential(CredentialBuilder::new("k1", SECRET).environments(["environments/prod"])),
    )
}

fn flag(rule: RuleBuilder) -> FlagBuilder {
    FlagBuilder::new("f")
        .field("color", s_string())
        .field("size", s_int())
        .variant("on", obj([("color", v_str("green"))]))
        .variant("off", empty_obj())
        .client("web")
        .rule(rule)
}

fn key(k: impl Into<f64>) -> confidence_resolver::proto::google::Struct {
    obj([("targeting_key", v_num(k))])
}

/// docs/resolver.md, "Hashing and bucketing".
#[test]
fn spec_example_a() {
    let state = load(
        &base()
            .segment(
                SegmentBuilder::new("abc123")
                    .attribute("c", "user.country", one_of([t_str("SE"), t_str("NO")]))
                    .expression(expr::id("c")),
            )
            .flag(flag(RuleBuilder::new("r1", "abc123").bucket_count(1000).variant("A", "on", [(0, 500)]).variant(
                "B",
                "off",
                [(500, 1000)],
            )))
            .build(),
    );
    let alice = obj([("targeting_key", v_str("alice")), ("user", v_obj([("country", v_str("SE"))]))]);
    let r = resolve_all(&state, SECRET, alice);
    let f = find(&r, "f").unwrap();
    assert_eq!(f.variant, "flags/f/variants/on");
    assert_eq!(f.assignment_origin, "flags/f/rules/r1");
    let v = f.value.as_ref().unwrap();
    assert_eq!(get_path(v, "color"), Some(&v_str("green")));
    assert_eq!(get_path(v, "size"), Some(&v_null()));

    let mut n42 = key(42);
    value::set_path(&mut n42, "user.country", v_str("NO"));
    let f = resolve_all(&state, SECRET, n42);
    assert_eq!(find(&f, "f").unwrap().variant, "flags/f/variants/off");

    let mut frac = key(4.5);
    value::set_path(&mut frac, "user.country", v_str("SE"));
    let f = resolve_all(&state, SECRET, frac);
    assert_eq!(find(&f, "f").unwrap().reason, ResolveReason::TargetingKeyError as i32);
}

#[test]
fn bitset_for_units_allocates_exactly_those_units() {
    let state = load(
        &base()
            .segment(SegmentBuilder::new("few").bitset(Bitset::for_units("acme", ["alice", "42"])))
            .flag(flag(RuleBuilder::full("r", "few", "on")))
            .build(),
    );
    for (ctx, hit) in [
        (obj([("targeting_key", v_str("alice"))]), true),
        (key(42), true),
        (obj([("targeting_key", v_str("bob"))]), false),
    ] {
        let r = resolve_all(&state, SECRET, ctx);
        assert_eq!(find(&r, "f").unwrap().reason == ResolveReason::Match as i32, hit);
    }
}

#[test]
fn bloom_filters_answer_materialized_segments() {
    let state = load(
        &base()
            .bloom_filter(BloomFilter::from_units("vip", ["alice", "carol"], 0.001))
            .segment(SegmentBuilder::new("vips").criterion("m", in_materialized("vip")).expression(expr::id("m")))
            .flag(flag(RuleBuilder::full("r", "vips", "on")))
            .build(),
    );
    for (unit, hit) in [("alice", true), ("carol", true), ("bob", false)] {
        let r = resolve_all(&state, SECRET, obj([("targeting_key", v_str(unit))]));
        let f = find(&r, "f").unwrap();
        let expected = if hit { ResolveReason::Match } else { ResolveReason::NoSegmentMatch };
        assert_eq!(f.reason, expected as i32, "{unit}");
    }
}

#[test]
fn fallthrough_client_default_environments_and_selectors() {
    let state = load(
        &base()
            .segment(SegmentBuilder::new("all"))
            .flag(
                flag(
                    RuleBuilder::new("staging-only", "all")
                        .environments(["environments/staging"])
                        .bucket_count(1)
                        .variant("x", "off", [(0, 1)]),
                )
                .rule(RuleBuilder::new("ft", "all").bucket_count(10).fallthrough("ft", [(0, 10)]))
                .rule(RuleBuilder::new("by-user", "all").selector("user.id").bucket_count(10).variant(
                    "v",
                    "on",
                    [(0, 10)],
                ))
                .rule(RuleBuilder::new("cd", "all").bucket_count(10).client_default("cd", [(0, 10)])),
            )
            .build(),
    );
    let with_user = obj([("user", v_obj([("id", v_str("u1"))]))]);
    let f = resolve_all(&state, SECRET, with_user);
    let f = find(&f, "f").unwrap();
    assert_eq!(f.assignment_origin, "flags/f/rules/by-user");
    assert_eq!(f.variant, "flags/f/variants/on");
    assert!(f.should_apply);

    let f = resolve_all(&state, SECRET, obj([("targeting_key", v_str("t"))]));
    let f = find(&f, "f").unwrap();
    assert_eq!(f.assignment_origin, "flags/f/rules/cd");
    assert_eq!(f.variant, "");
    assert_eq!(f.value.as_ref().map(|v| v.fields.len()), Some(0));
}

#[test]
fn every_criterion_kind_and_operator_builds_and_loads() {
    let ts = time::utc(2024, 1, 1, 0, 0, 0);
    let seg = SegmentBuilder::new("kitchen-sink")
        .attribute("eq", "country", eq(t_str("SE")))
        .attribute("set", "plan", one_of([t_str("pro"), t_str("enterprise")]))
        .attribute("range", "age", range(Bound::Exclusive(t_num(17)), Bound::Inclusive(t_num(65))))
        .attribute("ts", "created", at_least(t_ts(ts)))
        .attribute("ver", "app.version", between(t_version("1.2"), t_version("2.0.0")))
        .attribute("any", "tags", any(starts_with("be")))
        .attribute("all", "tags", all(ends_with("a")))
        .attribute("has", "email", contains("@"))
        .attribute("bool", "premium", eq(t_bool(true)))
        .attribute("list", "x", eq(t_list([t_str("a")])))
        .attribute("unset", "x", AttrRule::Unset)
        .criterion("seg", in_segment("other"))
        .criterion("none", Criterion::Unset)
        .expression(expr::or([
            expr::and([expr::id("eq"), expr::not(expr::id("set"))]),
            expr::id("range"),
            expr::id("seg"),
        ]));
    let built = base()
        .segment(seg)
        .segment(SegmentBuilder::new("other").bitset(Bitset::Full))
        .flag(flag(RuleBuilder::full("r", "kitchen-sink", "on")))
        .build();
    let state = load(&built);
    let r = resolve_all(&state, SECRET, obj([("targeting_key", v_str("a")), ("age", v_num(30))]));
    assert_eq!(find(&r, "f").unwrap().reason, ResolveReason::Match as i32);
    let pb = ResolverStatePb::decode(built.encode().as_slice()).unwrap();
    assert_eq!(pb.segments_no_bitsets[0].targeting.as_ref().unwrap().criteria.len(), 13);
    assert_eq!(
        pb.segments_no_bitsets[0].allocation.as_ref().and_then(|a| a.proportion.as_ref()).map(|d| d.value.as_str()),
        Some("1")
    );
}

#[test]
fn broken_bitsets_fail_to_load() {
    for raw in [packed_bitset::Bitset::FullBitset(false), packed_bitset::Bitset::GzippedBitset(vec![1, 2, 3])] {
        let built = base().segment(SegmentBuilder::new("s").bitset(Bitset::Raw(Some(raw)))).build();
        assert!(ResolverState::from_proto(built.proto.clone(), "acme", None).is_err());
    }
}

#[test]
fn unknown_secret_is_a_request_error() {
    let state = load(&base().build());
    let err = resolve(&state, ResolveFlagsRequest { client_secret: "nope".into(), ..Default::default() }).unwrap_err();
    assert!(err.starts_with("client secret not found"), "{err}");
}
