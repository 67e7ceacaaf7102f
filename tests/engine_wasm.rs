//! The wasm engine: pooled instances, atomic state swaps, trap recovery, recycling.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use confidence_openfeature_provider::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_openfeature_provider::engine::{Engine, EngineError};
use confidence_openfeature_provider::guest::{Clock, GuestModule, Limits};
use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ResolveFlagsRequest, ResolveProcessRequest, WriteFlagLogsRequest,
};
use prost::Message;
use serde_json::json;
use state_builder::{obj, s_string, v_str, ClientBuilder, FlagBuilder, RuleBuilder, SegmentBuilder, StateBuilder};

const SECRET: &str = "engine-secret";

/// A state whose two flags both answer `label`: a response mixing two states would show it.
fn labelled_state(label: &str) -> SetResolverStateRequest {
    let flag = |id: &str| {
        FlagBuilder::new(id)
            .field("label", s_string())
            .variant(label, obj([("label", v_str(label))]))
            .client("app")
            .rule(RuleBuilder::full("all", "everyone", label))
    };
    let built = StateBuilder::new("acct")
        .client(ClientBuilder::new("app").secret(SECRET))
        .segment(SegmentBuilder::new("everyone"))
        .flag(flag("first"))
        .flag(flag("second"))
        .build();
    set_state_request(built.encode(), &built.account_id)
}

fn engine(config: WasmEngineConfig) -> WasmEngine {
    WasmEngine::new(ours().clone(), config).expect("engine")
}

fn labelled_request(key: &str, apply: bool) -> ResolveProcessRequest {
    let req = ResolveFlagsRequest {
        flags: vec![],
        evaluation_context: Some(to_struct(&json!({ "targeting_key": key }))),
        client_secret: SECRET.into(),
        apply,
        sdk: None,
    };
    ResolveProcessRequest::without_materializations(req)
}

/// The labels of both flags in one response.
fn labels(engine: &WasmEngine, key: &str) -> Vec<String> {
    let (resp, _) = engine.resolve(&labelled_request(key, true)).expect("resolve").into_resolved().unwrap();
    let mut out: Vec<String> =
        resp.resolved_flags.iter().map(|f| f.variant.rsplit('/').next().unwrap().to_string()).collect();
    out.sort();
    out
}

fn exposures(batches: &[Vec<u8>]) -> usize {
    batches.iter().map(|b| WriteFlagLogsRequest::decode(b.as_slice()).unwrap().flag_assigned.len()).sum()
}

#[test]
fn before_any_state_evaluations_are_not_ready() {
    let e = engine(WasmEngineConfig::default());
    assert!(matches!(e.resolve(&labelled_request("k", false)), Err(EngineError::NotReady)));
}

#[test]
fn a_swap_during_a_tight_loop_never_errors_or_mixes_answers() {
    let e = Arc::new(engine(WasmEngineConfig::default()));
    let (a, b) = (labelled_state("one"), labelled_state("two"));
    e.load_state(&a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(Ordering::Relaxed) && swaps < 200 {
                e.load_state(if swaps % 2 == 0 { &b } else { &a }).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut evaluations = 0;
    while !swapper.is_finished() && Instant::now() < deadline {
        let l = labels(&e, &format!("user-{evaluations}"));
        assert!(l == ["one", "one"] || l == ["two", "two"], "mixed answer {l:?}");
        seen.insert(l[0].clone());
        evaluations += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps >= 50, "only {swaps} swaps");
    assert_eq!(seen.len(), 2, "both states were served during {evaluations} evaluations");
    // Every exposure of every retired instance is still there.
    assert_eq!(exposures(&e.flush_logs()), evaluations);
}

#[test]
fn a_rejected_state_keeps_the_last_good_one() {
    let e = engine(WasmEngineConfig::default());
    e.load_state(&labelled_state("one")).unwrap();
    let broken =
        SetResolverStateRequest { state: vec![0x0a, 0xff, 0xff], account_id: "acct".into(), ..Default::default() };
    let err = e.load_state(&broken).unwrap_err();
    assert!(err.to_string().contains("Failed to decode resolver state"), "{err}");
    assert_eq!(labels(&e, "k"), ["one", "one"]);
    assert_eq!(e.metrics().state_loads, 1);
}

#[test]
fn a_trap_replaces_the_instance_salvages_its_logs_and_keeps_serving() {
    let config = WasmEngineConfig {
        pool_size: 1,
        limits: Limits { max_memory_bytes: 24 << 20, ..Limits::default() },
        ..WasmEngineConfig::default()
    };
    let e = engine(config);
    e.load_state(&labelled_state("one")).unwrap();
    for i in 0..10 {
        labels(&e, &format!("before-{i}"));
    }
    // A context the guest cannot copy within its memory bound: allocation fails, it aborts.
    let huge = ResolveFlagsRequest {
        evaluation_context: Some(to_struct(&json!({ "targeting_key": "k", "blob": "x".repeat(9 << 20) }))),
        client_secret: SECRET.into(),
        ..Default::default()
    };
    let err = e.resolve(&ResolveProcessRequest::without_materializations(huge)).unwrap_err();
    assert!(matches!(err, EngineError::Crashed(_)), "{err}");
    assert_eq!(e.metrics().traps, 1);
    assert_eq!(labels(&e, "after"), ["one", "one"], "a fresh instance with the last good state");
    assert_eq!(exposures(&e.flush_logs()), 11, "10 salvaged from the broken instance + 1 after");
}

/// A module with the ABI whose exports misbehave: resolve loops forever, apply and full
/// flushes trap. Assembled (Binaryen's `wasm-as`) from this text, kept as bytes so the tests
/// need no WAT parser (a `wat` dev-dependency would change wasmtime's features under test and
/// rebuild it):
///
/// ```text
/// (module
///   (import "wasm_msg" "wasm_msg_host_current_time" (func $time (param i32) (result i32)))
///   (memory (export "memory") 1)
///   (data (i32.const 100) "\04\00\00\00")          ;; an empty Response at 104
///   (func (export "wasm_msg_alloc") (param i32) (result i32) i32.const 1024)
///   (func (export "wasm_msg_free") (param i32))
///   (func $ok (param i32) (result i32) i32.const 104)
///   (func $spin (param i32) (result i32) (loop $l (br $l)) i32.const 0)
///   (func $trap (param i32) (result i32) unreachable)
///   (export "wasm_msg_guest_set_resolver_state" (func $ok))
///   (export "wasm_msg_guest_resolve_flags" (func $spin))
///   (export "wasm_msg_guest_apply_flags" (func $trap))
///   (export "wasm_msg_guest_register_resolve" (func $ok))
///   (export "wasm_msg_guest_bounded_flush_logs" (func $trap))
///   (export "wasm_msg_guest_bounded_flush_assign" (func $ok))
///   (export "wasm_msg_guest_prometheus_snapshot" (func $ok)))
/// ```
const HOSTILE_WASM_HEX: &str = concat!(
    "0061736d01000000010a0260017f017f60017f00022701087761736d5f6d73671a7761736d5f6d73675f686f73745f63",
    "757272656e745f74696d65000003060500010000000503010001079c020a066d656d6f727902000e7761736d5f6d7367",
    "5f616c6c6f6300010d7761736d5f6d73675f667265650002217761736d5f6d73675f67756573745f7365745f7265736f",
    "6c7665725f737461746500031c7761736d5f6d73675f67756573745f7265736f6c76655f666c61677300041a7761736d",
    "5f6d73675f67756573745f6170706c795f666c61677300051f7761736d5f6d73675f67756573745f7265676973746572",
    "5f7265736f6c76650003217761736d5f6d73675f67756573745f626f756e6465645f666c7573685f6c6f677300052377",
    "61736d5f6d73675f67756573745f626f756e6465645f666c7573685f61737369676e0003227761736d5f6d73675f6775",
    "6573745f70726f6d6574686575735f736e617073686f7400030a1d0505004180080b02000b050041e8000b080003400c",
    "000b000b0300000b0b0b010041e4000b0404000000",
);

fn hostile_module() -> GuestModule {
    let bytes = hex::decode(HOSTILE_WASM_HEX).expect("hex");
    GuestModule::new(&bytes).expect("the hostile module has the ABI")
}

#[test]
fn a_guest_that_loops_forever_is_interrupted_and_replaced() {
    let config = WasmEngineConfig {
        limits: Limits { call_timeout: Duration::from_millis(100), ..Limits::default() },
        ..WasmEngineConfig::default()
    };
    let e = WasmEngine::new(hostile_module(), config).unwrap();
    e.load_state(&labelled_state("one")).unwrap();
    let start = Instant::now();
    let err = e.resolve(&labelled_request("k", false)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(err.to_string().contains("time budget"), "{err}");
    let apply = Default::default();
    assert!(matches!(e.apply(&apply), Err(EngineError::Crashed(_))));
    assert!(e.flush_logs().is_empty(), "a trapping flush yields nothing, and no panic");
    assert!(e.metrics().traps >= 3);
}

#[test]
fn instances_past_the_memory_bound_are_recycled_off_the_evaluation_path() {
    let config = WasmEngineConfig { pool_size: 1, recycle_memory_bytes: 4 << 20, ..WasmEngineConfig::default() };
    let e = engine(config);
    e.load_state(&set_state_request(fixture_state(), &fixture_account())).unwrap();
    let mut n = 0;
    // Unflushed exposures grow the guest's heap until it passes the bound.
    while e.metrics().guest_memory_bytes <= 4 << 20 {
        let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": format!("v{n}") })), true);
        e.resolve(&ResolveProcessRequest::without_materializations(req)).unwrap();
        n += 1;
        assert!(n < 200_000, "memory never grew");
    }
    e.maintain();
    let m = e.metrics();
    assert_eq!(m.recycles, 1);
    assert!(m.guest_memory_bytes < 4 << 20, "{m:?}");
    assert_eq!(exposures(&e.flush_logs()), n, "the recycled instance's exposures were kept");
}

#[test]
fn one_flush_drains_a_burst_larger_than_one_batch() {
    let e = engine(WasmEngineConfig { pool_size: 1, ..WasmEngineConfig::default() });
    e.load_state(&set_state_request(fixture_state(), &fixture_account())).unwrap();
    let n = 12_000;
    for i in 0..n {
        let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": format!("v{i}") })), true);
        e.resolve(&ResolveProcessRequest::without_materializations(req)).unwrap();
    }
    let batches = e.flush_logs();
    assert!(batches.len() >= 2, "more than one ~4 MiB batch");
    assert_eq!(exposures(&batches), n);
    assert!(e.flush_logs().is_empty());
}

#[test]
fn a_thousand_swaps_leave_guest_memory_bounded() {
    let e = engine(WasmEngineConfig { clock: Clock::Fixed(ORACLE_TIME), ..WasmEngineConfig::default() });
    let (a, b) = (labelled_state("one"), labelled_state("two"));
    let mut high_water = 0;
    for i in 0..1000 {
        e.load_state(if i % 2 == 0 { &a } else { &b }).unwrap();
        for k in 0..20 {
            labels(&e, &format!("u{k}"));
        }
        if i % 100 == 99 {
            e.flush_logs();
        }
        high_water = high_water.max(e.metrics().guest_memory_bytes);
    }
    let m = e.metrics();
    assert_eq!(m.state_loads, 1000);
    // Two fresh instances of a small state: a few MiB, however many swaps came before.
    assert!(high_water < 16 << 20, "guest memory reached {high_water} bytes");
}
