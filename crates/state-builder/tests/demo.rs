mod common;

use common::{find, load, resolve_all};
use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveReason;
use confidence_resolver::proto::google::value::Kind;
use prost::Message;
use state_builder::demo::*;
use state_builder::hash::bitset_position;
use state_builder::value::get_path;
use state_builder::*;

fn ctx(key: &str, extra: &[(&str, &str)]) -> confidence_resolver::proto::google::Struct {
    let mut s = obj([("targeting_key", v_str(key))]);
    for (path, v) in extra {
        value::set_path(&mut s, path, v_str(*v));
    }
    s
}

#[test]
fn demo_state_loads_and_lists_its_flags() {
    let demo = demo_state();
    let state = load(&demo);
    assert_eq!(demo.account_id, DEMO_ACCOUNT);
    assert_eq!(demo.secrets(), vec![DEMO_SECRET.to_string()]);
    let flags = resolve_all(&state, DEMO_SECRET, ctx("alice", &[]));
    for f in [FLAG_NEW_UI, FLAG_WELCOME, FLAG_MAX_ITEMS, FLAG_CHECKOUT, FLAG_GRADUAL] {
        assert!(find(&flags, f).is_some(), "{f} missing");
    }
    assert!(find(&flags, FLAG_RETIRED).is_none(), "archived flags are not resolved");
    assert!(state.secrets.contains_key(DEMO_SECRET));
    assert_eq!(state.secrets[DEMO_SECRET].client_credential_name, DEMO_CREDENTIAL);
}

#[test]
fn targeting_rule_wins_for_sweden_and_paying_plans() {
    let state = load(&demo_state());
    for extra in [[("country", "SE")], [("plan", "pro")], [("plan", "enterprise")]] {
        for key in ["alice", "bob", "carol", "u-1", "u-2"] {
            let flags = resolve_all(&state, DEMO_SECRET, ctx(key, &extra));
            let f = find(&flags, FLAG_NEW_UI).unwrap();
            assert_eq!(f.variant, "flags/new-ui/variants/on");
            assert_eq!(f.reason, ResolveReason::Match as i32);
            assert_eq!(f.assignment_origin, "flags/new-ui/rules/targeted");
            assert_eq!(get_path(f.value.as_ref().unwrap(), "enabled"), Some(&v_bool(true)));
        }
    }
}

#[test]
fn fallback_rollout_is_about_half() {
    let state = load(&demo_state());
    let mut on = 0;
    for i in 0..1000 {
        let flags = resolve_all(&state, DEMO_SECRET, ctx(&format!("visitor-{i}"), &[("country", "DK")]));
        let f = find(&flags, FLAG_NEW_UI).unwrap();
        assert_eq!(f.reason, ResolveReason::Match as i32);
        assert_eq!(f.assignment_origin, "flags/new-ui/rules/rollout");
        if f.variant.ends_with("/on") {
            on += 1;
        } else {
            assert_eq!(f.variant, "flags/new-ui/variants/off");
        }
    }
    assert!((430..=570).contains(&on), "on = {on}");
}

#[test]
fn rollout_without_targeting_key_is_no_match() {
    let state = load(&demo_state());
    let flags = resolve_all(&state, DEMO_SECRET, obj([("country", v_str("DK"))]));
    let f = find(&flags, FLAG_NEW_UI).unwrap();
    assert_eq!(f.reason, ResolveReason::NoSegmentMatch as i32);
    assert_eq!(f.variant, "");
}

#[test]
fn string_number_and_object_flags() {
    let state = load(&demo_state());
    let se = resolve_all(&state, DEMO_SECRET, ctx("alice", &[("country", "SE")]));
    let text = |flags: &[_], expected: &str| {
        let f = find(flags, FLAG_WELCOME).unwrap();
        assert_eq!(get_path(f.value.as_ref().unwrap(), "text"), Some(&v_str(expected)));
    };
    text(&se, "Välkommen!");
    let us = resolve_all(&state, DEMO_SECRET, ctx("alice", &[("country", "US")]));
    text(&us, "Welcome!");

    let ent = resolve_all(&state, DEMO_SECRET, ctx("bob", &[("plan", "enterprise")]));
    let limit = find(&ent, FLAG_MAX_ITEMS).unwrap();
    assert_eq!(get_path(limit.value.as_ref().unwrap(), "limit"), Some(&v_num(50)));
    let free = find(&us, FLAG_MAX_ITEMS).unwrap();
    assert_eq!(get_path(free.value.as_ref().unwrap(), "limit"), Some(&v_num(10)));

    let modern = resolve_all(&state, DEMO_SECRET, ctx("bob", &[("app.version", "2.1.0")]));
    let co = find(&modern, FLAG_CHECKOUT).unwrap();
    assert_eq!(co.variant, "flags/checkout/variants/modern");
    let value = co.value.as_ref().unwrap();
    assert_eq!(get_path(value, "theme.color"), Some(&v_str("green")));
    assert_eq!(get_path(value, "layout.columns"), Some(&v_num(2)));
    assert!(matches!(
        get_path(value, "steps").and_then(|v| v.kind.as_ref()),
        Some(Kind::ListValue(l)) if l.values.len() == 3
    ));
    let old = resolve_all(&state, DEMO_SECRET, ctx("bob", &[("app.version", "1.9.9")]));
    let co = find(&old, FLAG_CHECKOUT).unwrap();
    assert_eq!(get_path(co.value.as_ref().unwrap(), "theme.color"), Some(&v_str("blue")));
}

#[test]
fn gradual_rollout_follows_the_bitset() {
    let state = load(&demo_state());
    let mut on = 0;
    for i in 0..1000 {
        let key = format!("k{i}");
        let flags = resolve_all(&state, DEMO_SECRET, ctx(&key, &[]));
        let f = find(&flags, FLAG_GRADUAL).unwrap();
        let allocated = bitset_position(DEMO_ACCOUNT, &key) < u64::from(GRADUAL_BITS);
        if allocated {
            on += 1;
            assert_eq!(f.variant, "flags/gradual-rollout/variants/on");
        } else {
            assert_eq!(f.reason, ResolveReason::NoSegmentMatch as i32, "{key}");
        }
    }
    assert!((150..=250).contains(&on), "on = {on}");
}

#[test]
fn cdn_envelope_round_trips() {
    let demo = demo_state();
    let bytes = demo.encode_client_resolver_state();
    let env = ClientResolverState::decode(bytes.as_slice()).unwrap();
    assert_eq!(env.account, DEMO_ACCOUNT);
    assert_eq!(env.state, demo.encode());
    assert!(env.log_destinations.is_empty());

    let with_logs =
        StateBuilder::new("a").log_destinations([LogDestination::Cloudflare, LogDestination::SpotifyEdge]).build();
    let env = ClientResolverState::decode(with_logs.encode_client_resolver_state().as_slice()).unwrap();
    assert_eq!(env.log_destinations, vec![2, 1]);
}
