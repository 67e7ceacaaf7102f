//! Bad input never traps our guest: every case gets an error response or a defined reason,
//! and the instance keeps serving afterwards.

use crate::common::*;
use confidence_host::guest::{Clock, Export, Guest, GuestError};
use confidence_proto::{Request, Void};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    AppliedFlag, ApplyFlagsRequest, ResolveProcessRequest, ResolveReason,
};
use confidence_resolver::proto::google::{value::Kind, Struct, Value};
use prost::Message;
use serde_json::json;

const FT2: &str = "flags/fallthrough-test-2";

/// Asserts the guest did not trap and still answers a known request correctly.
fn still_serving(g: &mut Guest) {
    let resp =
        resolve(g, request(FIXTURE_SECRET, &[FT2], to_struct(&json!({"visitor_id": "tutorial_visitor"})), false))
            .expect("instance still serves");
    assert_eq!(resp.resolved_flags.len(), 1);
}

fn no_trap<T: std::fmt::Debug>(what: &str, r: &Result<T, GuestError>) {
    if let Err(e) = r {
        assert!(!e.poisons_instance(), "{what}: guest trapped: {e}");
    }
}

fn set_state(g: &mut Guest, bytes: Vec<u8>) -> Result<Void, GuestError> {
    g.call::<Void>(Export::SetResolverState, Some(&set_state_request(bytes, &fixture_account())))
}

#[test]
fn broken_states_are_errors_and_the_last_good_state_stays() {
    let mut g = fixture_guest(ours());
    let good = fixture_state();
    let mut garbage = vec![0xffu8; 4096];
    garbage[0] = 0x0a;
    for (what, bytes) in
        [("truncated", good[..good.len() / 2].to_vec()), ("garbage", garbage), ("one byte", vec![0x0a])]
    {
        let r = set_state(&mut g, bytes);
        no_trap(what, &r);
        let e = r.expect_err(what);
        assert!(e.to_string().starts_with("Failed to decode resolver state"), "{what}: {e}");
        still_serving(&mut g);
    }
}

#[test]
fn a_state_without_the_callers_client_answers_secret_not_found() {
    // Empty bytes are a valid, empty ResolverState: no clients at all.
    let mut g = loaded(ours(), Vec::new(), "acct", Clock::System);
    let err = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], Struct::default(), false)).unwrap_err();
    assert_eq!(err.to_string(), "client secret not found: requested=mkj...2YF, available=[]");
}

#[test]
fn garbage_request_bytes_are_error_responses() {
    let mut g = fixture_guest(ours());
    for export in Export::ALL {
        let r = g.call_raw(export, Some(&[0xff, 0xff, 0xff, 0x07, 0x01]));
        no_trap(export.name(), &r);
        // An envelope whose inner message is garbage.
        let inner = Request { data: vec![0x0a, 0xff, 0x01] }.encode_to_vec();
        let r = g.call_raw(export, Some(&inner));
        no_trap(export.name(), &r);
        if export == Export::ResolveFlags {
            assert!(matches!(r, Err(GuestError::Resolver(_))), "{r:?}");
        }
    }
    still_serving(&mut g);
}

#[test]
fn unknown_secrets_including_multibyte_ones_are_answered() {
    let mut g = fixture_guest(ours());
    for secret in ["", "short", "nope-not-a-secret", "ééééééééé", "日本語の秘密", "a\u{0}b\u{0}c\u{0}d"]
    {
        let r = resolve(&mut g, request(secret, &[FT2], Struct::default(), false));
        no_trap(secret, &r);
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("client secret not found: requested="), "{secret}: {e}");
    }
    // The mask keeps the released resolver's wording where that does not split a character.
    let e = resolve(&mut g, request("RQHn8XG", &[FT2], Struct::default(), false)).unwrap_err();
    assert_eq!(e.to_string(), "client secret not found: requested=RQH...8XG, available=[mkj...2YF]");
    still_serving(&mut g);
}

#[test]
fn unknown_flags_resolve_to_nothing() {
    let mut g = fixture_guest(ours());
    let resp =
        resolve(&mut g, request(FIXTURE_SECRET, &["flags/nope", "no-prefix", ""], Struct::default(), true)).unwrap();
    assert!(resp.resolved_flags.is_empty());
}

fn nested(depth: usize) -> Struct {
    let mut s = to_struct(&json!({"visitor_id": "deep"}));
    for _ in 0..depth {
        let mut outer = Struct::default();
        outer.fields.insert("visitor_id".into(), Value { kind: Some(Kind::StringValue("x".into())) });
        outer.fields.insert("inner".into(), Value { kind: Some(Kind::StructValue(s)) });
        s = outer;
    }
    s
}

#[test]
fn hostile_contexts_get_an_answer_or_an_error_never_a_trap() {
    let mut g = fixture_guest(ours());
    let big = "x".repeat(1 << 20);
    let long_list: Vec<u32> = (0..100_000).collect();
    let contexts: Vec<(&str, Struct)> = vec![
        ("100 levels deep", nested(100)),
        ("1000 levels deep", nested(1000)),
        ("1 MB targeting key", to_struct(&json!({"visitor_id": big}))),
        ("1 MB attribute", to_struct(&json!({"visitor_id": "v", "note": big}))),
        ("100k-element list", to_struct(&json!({"visitor_id": "v", "ids": long_list}))),
        ("100k-element targeting key", to_struct(&json!({"visitor_id": long_list}))),
    ];
    for (what, ctx) in contexts {
        let r = resolve(&mut g, request(FIXTURE_SECRET, &[], ctx, true));
        no_trap(what, &r);
        still_serving(&mut g);
    }
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX, 1e300, 0.5] {
        let mut ctx = Struct::default();
        ctx.fields.insert("visitor_id".into(), Value { kind: Some(Kind::NumberValue(x)) });
        ctx.fields.insert("score".into(), Value { kind: Some(Kind::NumberValue(x)) });
        let resp = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], ctx, true)).unwrap();
        let reason = resp.resolved_flags[0].reason;
        // Non-integral or unrepresentable keys are a targeting key error; -0 and MAX bucket.
        if !x.is_finite() || x.fract() != 0.0 || x == 1e300 {
            assert_eq!(reason, ResolveReason::TargetingKeyError as i32, "{x}");
        }
    }
    still_serving(&mut g);
}

#[test]
fn apply_with_garbage_tokens_is_an_error_response() {
    let mut g = fixture_guest(ours());
    let apply = ApplyFlagsRequest {
        flags: vec![AppliedFlag { flag: FT2.into(), apply_time: Some(ORACLE_TIME) }],
        client_secret: FIXTURE_SECRET.into(),
        resolve_token: vec![0xde, 0xad, 0xbe, 0xef],
        send_time: Some(ORACLE_TIME),
        sdk: None,
    };
    let r = g.call::<Void>(Export::ApplyFlags, Some(&apply));
    no_trap("garbage token", &r);
    assert!(r.unwrap_err().to_string().starts_with("apply_flags: "));
    let mut no_time = apply.clone();
    no_time.send_time = None;
    assert!(g.call::<Void>(Export::ApplyFlags, Some(&no_time)).is_err());
    still_serving(&mut g);
}

#[test]
fn resume_with_a_garbage_continuation_is_an_error() {
    let mut g = fixture_guest(ours());
    let r = resolve_process(&mut g, ResolveProcessRequest::resume(vec![], vec![0xff; 16]));
    no_trap("resume", &r);
    assert!(r.unwrap_err().to_string().contains("continuation"));
    still_serving(&mut g);
}

/// Property: no byte string, sent to any export framed or not, traps the guest. Seeded
/// random cases (reproducible: the failing seed and case are in the message), bounded so
/// `npm test` stays quick; a plain loop instead of a property-testing crate, whose
/// dependencies would change wasmtime's features under test and rebuild it.
#[test]
fn random_bytes_never_trap_any_export() {
    let mut rng = Rng(0x5eed_0001);
    let mut g = fixture_guest(ours());
    for case in 0..400 {
        let len = rng.below(512) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let export = *rng.pick(&Export::ALL);
        let payload = if rng.chance(50) { Request { data: bytes }.encode_to_vec() } else { bytes };
        let r = g.call_raw(export, Some(&payload));
        assert!(!matches!(&r, Err(e) if e.poisons_instance()), "case {case}: {}: {r:?} on {payload:?}", export.name());
        still_serving(&mut g);
    }
}

/// Property: no byte string offered as a state traps the guest or replaces the good state.
#[test]
fn random_states_never_trap() {
    let mut rng = Rng(0x5eed_0002);
    let mut g = fixture_guest(ours());
    let good = fixture_state();
    for case in 0..300 {
        let bytes: Vec<u8> = if rng.chance(50) {
            (0..rng.below(2048)).map(|_| rng.next() as u8).collect()
        } else {
            // Mutations of the real state reach deeper than pure noise.
            let mut b = good[..rng.below(good.len() as u64) as usize].to_vec();
            for _ in 0..8 {
                if !b.is_empty() {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.next() as u8;
                }
            }
            b
        };
        let r = set_state(&mut g, bytes);
        assert!(!matches!(&r, Err(e) if e.poisons_instance()), "case {case}: {r:?}");
        if r.is_ok() {
            // A mutation that still decodes is a different, valid state: put the good one back.
            set_state(&mut g, good.clone()).unwrap();
        }
        still_serving(&mut g);
    }
}
