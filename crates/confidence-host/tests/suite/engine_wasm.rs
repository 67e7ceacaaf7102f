//! The wasm engine: pooled instances, atomic state swaps, trap recovery, recycling.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::{Engine, EngineError};
use confidence_host::guest::{Clock, GuestModule, Limits};
use confidence_host::log_upload::UploadStats;
use confidence_host::metrics;
use confidence_host::state_sync::SyncSnapshot;
use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    resolve_process_request, ResolveFlagsRequest, ResolveProcessRequest, WriteFlagLogsRequest,
};
use prost::Message;
use serde_json::json;

fn engine(config: WasmEngineConfig) -> WasmEngine {
    WasmEngine::new(ours().clone(), config).expect("engine")
}

fn labelled_request(key: &str, apply: bool) -> ResolveProcessRequest {
    let req = ResolveFlagsRequest {
        flags: vec![],
        evaluation_context: Some(to_struct(&json!({ "targeting_key": key }))),
        client_secret: LABEL_SECRET.into(),
        apply,
        sdk: None,
    };
    ResolveProcessRequest::without_materializations(req)
}

/// The labels of both flags in one response.
fn labels(engine: &WasmEngine, key: &str) -> Vec<String> {
    let (resp, _) = engine.resolve(labelled_request(key, true)).expect("resolve").into_resolved().unwrap();
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
    assert!(matches!(e.resolve(labelled_request("k", false)), Err(EngineError::NotReady)));
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
        client_secret: LABEL_SECRET.into(),
        ..Default::default()
    };
    let err = e.resolve(ResolveProcessRequest::without_materializations(huge)).unwrap_err();
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
    let err = e.resolve(labelled_request("k", false)).unwrap_err();
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
        e.resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
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
        e.resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
    }
    let batches = e.flush_logs();
    assert!(batches.len() >= 2, "more than one ~4 MiB batch");
    assert_eq!(exposures(&batches), n);
    assert!(e.flush_logs().is_empty());
}

/// The values of every sample of metric `name` (labels ignored) in Prometheus text.
fn samples(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// Resident memory of this process, where the OS tells it cheaply (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>();
    kb.ok().map(|kb| kb << 10)
}

/// A long run as the host drives it: 1,000,000 applied evaluations on two threads, 1000 state
/// swaps between them, and every `BACKGROUND_EVERY` evaluations the flush loop's work
/// (`maintain`, then a full flush). Most rounds between swaps are short. Every 100th round is
/// long and opens with a burst that outpaces the flush loop, growing each instance's linear
/// memory (which never shrinks) past the recycle bound: only recycling gives it back before
/// the next swap.
#[test]
fn a_million_evaluations_and_a_thousand_swaps_keep_guest_memory_bounded() {
    const EVALUATIONS: usize = 1_000_000;
    const SWAPS: usize = 1000;
    const SHORT_ROUND: usize = 500;
    /// 990 × 500 + 10 × 50,500 = 1,000,000.
    const LONG_ROUND: usize = 50_500;
    /// Evaluations at the start of a long round without background work.
    const BURST: usize = 30_000;
    const BACKGROUND_EVERY: usize = 2000;
    /// Per instance (the default is 128 MiB). A fresh instance of this state has ~1.2 MiB, a
    /// background period's exposures add well under 1 MiB, a burst's take it to ~8 MiB.
    const RECYCLE: u64 = 4 << 20;
    /// The stated bound once background work has run: no instance over the recycle bound, plus
    /// what the other thread's evaluations add meanwhile. Without recycling: ~32 MiB.
    const SETTLED: u64 = 2 * RECYCLE + (4 << 20);
    /// The stated bound at any time: a burst's exposures in both instances, with room to spare.
    const PEAK: u64 = 32 << 20;

    const SWAP_TO_ONE: u8 = 1;
    const SWAP_TO_TWO: u8 = 2;
    const BACKGROUND: u8 = 4;
    let mut schedule = vec![0u8; EVALUATIONS];
    let mut start = 0;
    for round in 0..SWAPS {
        let long = round % 100 == 99;
        let len = if long { LONG_ROUND } else { SHORT_ROUND };
        // The first load precedes the run; then one swap opens each round.
        if round > 0 {
            schedule[start] |= if round % 2 == 0 { SWAP_TO_ONE } else { SWAP_TO_TWO };
        }
        for (i, step) in schedule.iter_mut().enumerate().take(start + len).skip(start) {
            if i % BACKGROUND_EVERY == BACKGROUND_EVERY - 1 && !(long && i < start + BURST) {
                *step |= BACKGROUND;
            }
        }
        start += len;
    }
    assert_eq!(start, EVALUATIONS);

    let config = WasmEngineConfig {
        pool_size: 2,
        recycle_memory_bytes: RECYCLE,
        clock: Clock::Fixed(ORACLE_TIME),
        ..WasmEngineConfig::default()
    };
    let e = engine(config);
    let (one, two) = (labelled_state("one"), labelled_state("two"));
    // One flag, distinct units, requests built once: a resolve costs what the guest needs.
    let requests: Vec<ResolveProcessRequest> = (0..1000)
        .map(|k| {
            let mut r = labelled_request(&format!("u{k}"), true);
            if let Some(resolve_process_request::Resolve::WithoutMaterializations(r)) = &mut r.resolve {
                r.flags = vec!["flags/first".into()];
            }
            r
        })
        .collect();
    e.load_state(&one).unwrap();

    let next = AtomicUsize::new(0);
    let peak = AtomicU64::new(0);
    let settled = AtomicU64::new(0);
    let flushed = AtomicUsize::new(0);
    // Background runs that found the pool past twice the recycle bound: an instance was over it.
    let over_bound = AtomicUsize::new(0);
    let baseline = std::sync::OnceLock::new();
    let background = || {
        let before = e.metrics().guest_memory_bytes;
        peak.fetch_max(before, Ordering::Relaxed);
        if before > 2 * RECYCLE {
            over_bound.fetch_add(1, Ordering::Relaxed);
        }
        e.maintain();
        settled.fetch_max(e.metrics().guest_memory_bytes, Ordering::Relaxed);
        flushed.fetch_add(exposures(&e.flush_logs()), Ordering::Relaxed);
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= EVALUATIONS {
                    return;
                }
                let step = schedule[i];
                if step & SWAP_TO_ONE != 0 {
                    e.load_state(&one).unwrap();
                } else if step & SWAP_TO_TWO != 0 {
                    e.load_state(&two).unwrap();
                }
                if step & BACKGROUND != 0 {
                    background();
                }
                if i == EVALUATIONS / 10 {
                    // Past the first long round: allocators and caches have warmed up.
                    let _ = baseline.set(resident_bytes());
                }
                let (resp, _) = e.resolve(requests[i % requests.len()].clone()).unwrap().into_resolved().unwrap();
                let variant = resp.resolved_flags[0].variant.rsplit('/').next().unwrap();
                assert!(variant == "one" || variant == "two", "#{i}: {variant}");
                if i.is_multiple_of(100) {
                    peak.fetch_max(e.metrics().guest_memory_bytes, Ordering::Relaxed);
                }
            });
        }
    });
    background();
    let (peak, settled) = (peak.load(Ordering::Relaxed), settled.load(Ordering::Relaxed));
    let m = e.metrics();
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    // Resident growth since warm-up, where the OS tells it (Linux).
    let grown = match (baseline.get(), resident_bytes()) {
        (Some(Some(before)), Some(after)) => Some(after.saturating_sub(*before)),
        _ => None,
    };
    eprintln!(
        "{EVALUATIONS} evaluations, {SWAPS} swaps: {:.1} s; guest memory peak {:.1} MiB, settled {:.1} MiB; \
         {} recycles; process grew {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(peak),
        mib(settled),
        m.recycles,
        mib(grown.unwrap_or_default()),
    );

    assert_eq!(m.state_loads, SWAPS as u64);
    assert_eq!(m.traps, 0);
    assert_eq!(m.pending_log_batches, 0, "every salvaged batch left with a flush");
    assert_eq!(
        flushed.load(Ordering::Relaxed),
        EVALUATIONS,
        "one exposure per evaluation, through every swap and recycle"
    );
    assert!(over_bound.load(Ordering::Relaxed) > 0, "the bursts never took an instance past the recycle bound");
    assert!(peak <= PEAK, "guest memory reached {peak} bytes (bound {PEAK})");
    assert!(settled <= SETTLED, "after background work guest memory was still {settled} bytes (bound {SETTLED})");
    // Retired instances are freed: 1000 swaps of two instances would otherwise hold gigabytes.
    if let Some(grown) = grown {
        assert!(grown < 256 << 20, "the process grew by {:.0} MiB over the run", mib(grown));
    }

    // What an operator sees: the same figures in the scrape.
    let text = metrics::render(&SyncSnapshot::default(), &UploadStats::default(), &m, &e.prometheus("confidence"));
    let recycles = samples(&text, "confidence_resolver_recycles_total");
    assert_eq!(recycles, [m.recycles as f64]);
    assert!(recycles[0] > 0.0, "the bound was hit, so instances were recycled");
    let gauge = samples(&text, "confidence_guest_memory_bytes");
    assert!(gauge.len() == 1 && gauge[0] <= SETTLED as f64, "{gauge:?}");
    assert_eq!(samples(&text, "confidence_state_swaps_total"), [SWAPS as f64]);
    // The resolver's own gauge, one sample per instance, under one family header.
    assert_eq!(samples(&text, "confidence_memory_bytes").len(), 2, "{text}");
    assert_eq!(text.matches("# TYPE confidence_memory_bytes ").count(), 1, "one family, declared once:\n{text}");
}
