//! The native engine against the wasm engine (our guest, one instance, same frozen clock):
//! the same answers and the same flushed logs, with resolve logging inline and deferred to its
//! worker thread; plus apply, materializations, concurrency, isolation between engines and
//! readiness. Comparisons ignore what legitimately differs per build and per process (see
//! tests/differential.rs): hash-map order, internal error codes, resolve ids, memory size.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::*;
use confidence_host::engine::native::{NativeEngine, NativeEngineConfig};
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::{Engine, EngineError};
use confidence_host::guest::Clock;
use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    resolve_process_response, ApplyFlagsRequest, MaterializationRecord, ResolveFlagsRequest, ResolveProcessRequest,
    WriteFlagLogsRequest,
};
use prost::Message;
use serde_json::json;

fn wasm_engine() -> WasmEngine {
    let config = WasmEngineConfig { pool_size: 1, clock: Clock::Fixed(ORACLE_TIME), ..WasmEngineConfig::default() };
    WasmEngine::new(ours().clone(), config).expect("wasm engine")
}

fn native_engine(defer_resolve_log: bool) -> NativeEngine {
    let config = NativeEngineConfig { clock: Clock::Fixed(ORACLE_TIME), defer_resolve_log, ..Default::default() };
    NativeEngine::new(config).expect("native engine")
}

/// The reference and both native modes, each with `state` loaded.
fn engines(state: &SetResolverStateRequest) -> Vec<(&'static str, Box<dyn Engine>)> {
    let all: Vec<(&'static str, Box<dyn Engine>)> = vec![
        ("wasm", Box::new(wasm_engine())),
        ("native inline", Box::new(native_engine(false))),
        ("native deferred", Box::new(native_engine(true))),
    ];
    for (name, e) in &all {
        e.load_state(state).unwrap_or_else(|err| panic!("{name}: load state: {err}"));
    }
    all
}

fn fixture_state_request() -> SetResolverStateRequest {
    set_state_request(fixture_state(), &fixture_account())
}

fn engine_outcome(e: &dyn Engine, req: &ResolveProcessRequest) -> Outcome {
    match e.resolve(req.clone()) {
        Ok(r) => Ok(outcome_of(r)),
        Err(EngineError::Resolver(m)) => Err(m),
        Err(err) => panic!("engine failed: {err}"),
    }
}

/// Every request through every engine; all must answer like the first (the wasm engine).
fn assert_same_answers(name: &str, engines: &[(&str, Box<dyn Engine>)], requests: &[ResolveProcessRequest]) {
    let mut diffs = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let reference = without_code(engine_outcome(engines[0].1.as_ref(), req));
        for (engine, e) in &engines[1..] {
            let got = without_code(engine_outcome(e.as_ref(), req));
            if got != reference {
                diffs.push(format!("#{i} {engine}: {req:?}\n  wasm:   {reference:?}\n  native: {got:?}"));
            }
        }
    }
    assert!(diffs.is_empty(), "{name}: {} answers differ:\n{}", diffs.len(), diffs[..diffs.len().min(5)].join("\n"));
}

#[test]
fn oracle_cases_get_the_wasm_engines_answers_and_the_recorded_ones() {
    let engines = engines(&fixture_state_request());
    let cases = oracle_cases();
    let requests: Vec<_> =
        cases.iter().map(|c| ResolveProcessRequest::deferred_materializations(oracle_request(c))).collect();
    assert_same_answers("oracle", &engines, &requests);
    // And the oracle itself, independently of the wasm engine.
    let native = &engines[1].1;
    for (case, req) in cases.iter().zip(&requests) {
        let got = match native.resolve(req.clone()) {
            Ok(r) => Ok(comparable(&r.into_resolved().expect("resolved").0)),
            Err(EngineError::Resolver(e)) => Err(e),
            Err(e) => panic!("case {}: {e}", case["id"]),
        };
        assert_eq!(got, expected(case), "case {}", case["id"]);
    }
}

#[test]
fn generated_requests_on_the_fixture_agree() {
    let engines = engines(&fixture_state_request());
    let requests: Vec<_> = generated_fixture_requests(42, 5000)
        .into_iter()
        .map(ResolveProcessRequest::deferred_materializations)
        .collect();
    assert_same_answers("generated on fixture", &engines, &requests);
}

/// Random states from the state builder, every mode the differential test uses.
#[test]
fn built_states_agree() {
    use state_builder::random::{Generator, Options};
    let option_sets = [
        Options::default(),
        Options { request_errors: true, ..Options::default() },
        Options { bloom_filters: true, materializations: true, ..Options::default() },
    ];
    for (k, options) in option_sets.into_iter().enumerate() {
        for seed in 0..8u64 {
            let scenario = Generator::with_options(1000 * k as u64 + seed, options.clone()).scenario();
            let engines = engines(&set_state_request(scenario.state.encode(), &scenario.state.account_id));
            let requests: Vec<_> = scenario
                .requests(seed, 250)
                .into_iter()
                .flat_map(|r| {
                    [
                        ResolveProcessRequest::without_materializations(r.clone()),
                        ResolveProcessRequest::deferred_materializations(r),
                    ]
                })
                .collect();
            assert_same_answers(&format!("options {k} seed {seed}"), &engines, &requests);
        }
    }
}

/// One flush's batches as one normalised request (a single instance gives at most one batch
/// at these volumes).
fn flushed(e: &dyn Engine) -> WriteFlagLogsRequest {
    let mut merged = WriteFlagLogsRequest::default();
    for bytes in e.flush_logs() {
        let batch = WriteFlagLogsRequest::decode(bytes.as_slice()).expect("batch");
        merged.flag_assigned.extend(batch.flag_assigned);
        merged.client_resolve_info.extend(batch.client_resolve_info);
        merged.flag_resolve_info.extend(batch.flag_resolve_info);
        merged.telemetry_data = merged.telemetry_data.or(batch.telemetry_data);
    }
    normalise(merged)
}

/// The workload of tests/differential.rs through the `Engine` trait: resolves in both apply
/// modes, deferred applies, telemetry, a flush every `flush_every` requests.
fn exercise(e: &dyn Engine, requests: &[ResolveFlagsRequest], flush_every: usize) -> Vec<WriteFlagLogsRequest> {
    let mut flushes = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        if let Ok(resp) = e.resolve(ResolveProcessRequest::without_materializations(req.clone())) {
            let (resp, _) = resp.into_resolved().expect("resolved");
            if let Some(apply) = deferred_apply(req, &resp) {
                let _ = e.apply(&apply);
            }
            let reason = resp.resolved_flags.iter().min_by(|a, b| a.flag.cmp(&b.flag)).map(|f| f.reason).unwrap_or(0);
            e.register_resolve(reason, (i as u32 % 500) + 1);
        }
        if i % flush_every == flush_every - 1 {
            flushes.push(flushed(e));
        }
    }
    flushes.push(flushed(e));
    flushes
}

fn assert_same_logs_everywhere(
    name: &str,
    state: &SetResolverStateRequest,
    requests: &[ResolveFlagsRequest],
    flush_every: usize,
) {
    let engines = engines(state);
    let reference = exercise(engines[0].1.as_ref(), requests, flush_every);
    for (engine, e) in &engines[1..] {
        assert_same_logs(&format!("{name}, {engine}"), exercise(e.as_ref(), requests, flush_every), reference.clone());
    }
}

/// Below 50 distinct context schemas per credential and flush, every flush must be equal.
/// (Beyond, which schemas the crate's sample keeps is random, drawn from each engine's own
/// RNG: see the next test.) Random built states give nearly every request its own schema, so
/// they flush every 49 requests.
#[test]
fn flushed_logs_are_equivalent_inline_and_deferred() {
    assert_same_logs_everywhere("fixture", &fixture_state_request(), &generated_fixture_requests(7, 2000), 700);
    for seed in 0..3 {
        let scenario = state_builder::random::scenario(seed);
        let state = set_state_request(scenario.state.encode(), &scenario.state.account_id);
        assert_same_logs_everywhere(&format!("built state {seed}"), &state, &scenario.requests(seed, 1500), 49);
    }
}

/// Past 50 distinct schemas the crate keeps a random sample of 50 (docs/resolver.md, "Resolve logs and context schema"):
/// every engine reports exactly 50, each one a schema of a context it resolved.
#[test]
fn a_full_schema_sample_holds_50_schemas_of_resolved_contexts() {
    use confidence_resolver::resolve_logger::build_resolve_log;
    let contexts: Vec<_> =
        (0..200).map(|i| to_struct(&json!({ "targeting_key": format!("u{i}"), format!("attr_{i}"): "x" }))).collect();
    let derived: Vec<_> = contexts.iter().map(|c| build_resolve_log(c, "", &[]).1.schema.remove(0)).collect();
    for (name, e) in engines(&labelled_state("one")) {
        for ctx in &contexts {
            let req = request(LABEL_SECRET, &["flags/first"], ctx.clone(), true);
            e.resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
        }
        let logs = flushed(e.as_ref());
        assert_eq!(logs.client_resolve_info.len(), 1, "{name}");
        let sample = &logs.client_resolve_info[0].schema;
        assert_eq!(sample.len(), 50, "{name}");
        assert!(sample.iter().all(|s| derived.contains(s)), "{name}: a schema no resolved context has");
        assert_eq!(counted(&[logs]), (200, 200), "{name}");
    }
}

/// Apply's outcomes, error wording included, and the exposures it logs.
#[test]
fn apply_agrees_with_the_wasm_engine() {
    let run = |e: &dyn Engine| {
        let ctx = to_struct(&json!({"visitor_id": "tutorial_visitor"}));
        let req = request(FIXTURE_SECRET, &["flags/fallthrough-test-2"], ctx, false);
        let (resp, _) =
            e.resolve(ResolveProcessRequest::without_materializations(req)).unwrap().into_resolved().unwrap();
        let apply = apply_one;
        let strip = |r: Result<(), EngineError>| r.map_err(|e| e.to_string().split(" [").next().unwrap().to_string());
        let outcomes = vec![
            strip(e.apply(&apply("flags/fallthrough-test-2", FIXTURE_SECRET, &resp.resolve_token))),
            strip(e.apply(&apply("flags/other", FIXTURE_SECRET, &resp.resolve_token))),
            strip(e.apply(&apply("flags/fallthrough-test-2", "nope", &resp.resolve_token))),
            strip(e.apply(&apply("flags/fallthrough-test-2", FIXTURE_SECRET, &[1, 2, 3]))),
        ];
        (outcomes, flushed(e))
    };
    let engines = engines(&fixture_state_request());
    let (reference, logs) = run(engines[0].1.as_ref());
    assert!(reference[0].is_ok() && reference[1..].iter().all(Result::is_err), "{reference:?}");
    assert_eq!(logs.flag_assigned.len(), 1, "the one good apply logged its exposure");
    for (name, e) in &engines[1..] {
        assert_eq!(run(e.as_ref()), (reference.clone(), logs.clone()), "{name}");
    }
}

/// Suspends for the reads; resumes with a stored variant and without; and every engine's
/// continuation resumes in every other engine with the same answer.
#[test]
fn materializations_suspend_and_resume_like_the_wasm_engine() {
    let engines = engines(&{
        let state = sticky_state();
        set_state_request(state.encode(), &state.account_id)
    });
    let req = |unit: &str| {
        let r = request(STICKY_SECRET, &["flags/exp"], to_struct(&json!({ "targeting_key": unit })), true);
        ResolveProcessRequest::deferred_materializations(r)
    };
    let suspend = |e: &dyn Engine, unit: &str| match e.resolve(req(unit)).expect("resolve").result {
        Some(resolve_process_response::Result::Suspended(s)) => s,
        other => panic!("expected a suspension, got {other:?}"),
    };
    let reference = suspend(engines[0].1.as_ref(), "alice");
    assert_eq!(reference.materializations_to_read.len(), 1);
    let stored = MaterializationRecord {
        variant: "flags/exp/variants/b".into(),
        ..reference.materializations_to_read[0].clone()
    };
    for (name, e) in &engines {
        let s = suspend(e.as_ref(), "alice");
        assert_eq!(s.materializations_to_read, reference.materializations_to_read, "{name}");
        let mut fresh = Vec::new();
        for (other, o) in &engines {
            let with_store = o.resolve(ResolveProcessRequest::resume(vec![stored.clone()], s.state.clone())).unwrap();
            let (resp, writes) = with_store.into_resolved().expect("resolved after resume");
            assert_eq!(resp.resolved_flags[0].variant, "flags/exp/variants/b", "{name} -> {other}");
            assert!(writes.is_empty(), "{name} -> {other}");
            fresh.push(engine_outcome(o.as_ref(), &ResolveProcessRequest::resume(vec![], s.state.clone())));
        }
        assert!(fresh.iter().all(|f| *f == fresh[0]), "{name}: a fresh assignment and its write: {fresh:?}");
        assert!(fresh[0].as_ref().unwrap().iter().any(|(k, _)| k == "write"), "{name}: the host is asked to write");
    }
    // Every engine resumed the same continuations, so every engine logged the same.
    let reference_logs = flushed(engines[0].1.as_ref());
    assert_eq!(reference_logs.flag_assigned.len(), 2 * engines.len(), "two resumes per continuation");
    for (name, e) in &engines[1..] {
        assert_eq!(flushed(e.as_ref()), reference_logs, "{name}");
    }
}

fn labelled_request(key: &str, flags: &[&str]) -> ResolveProcessRequest {
    ResolveProcessRequest::without_materializations(request(
        LABEL_SECRET,
        flags,
        to_struct(&json!({ "targeting_key": key, "n": key.len() })),
        true,
    ))
}

/// Resolves counted in flushed logs: (sum of variant counts, FlagAssigned events).
fn counted(batches: &[WriteFlagLogsRequest]) -> (i64, usize) {
    let resolves =
        batches.iter().flat_map(|b| &b.flag_resolve_info).flat_map(|f| &f.variant_resolve_info).map(|v| v.count).sum();
    (resolves, batches.iter().map(|b| b.flag_assigned.len()).sum())
}

fn decoded(batches: Vec<Vec<u8>>) -> Vec<WriteFlagLogsRequest> {
    batches.iter().map(|b| WriteFlagLogsRequest::decode(b.as_slice()).expect("batch")).collect()
}

/// Two threads resolve while one swaps states and one flushes: no error, no response mixing
/// two states, and the flushes together count every resolve exactly once. A tiny queue makes
/// the deferred mode also take its inline fallback.
#[test]
fn concurrent_resolves_swaps_and_flushes() {
    for (defer_resolve_log, resolve_log_queue) in [(false, 1), (true, 4), (true, 8192)] {
        let config = NativeEngineConfig { clock: Clock::Fixed(ORACLE_TIME), defer_resolve_log, resolve_log_queue };
        let e = Arc::new(NativeEngine::new(config).expect("engine"));
        let (one, two) = (labelled_state("one"), labelled_state("two"));
        e.load_state(&one).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let resolves = Arc::new(AtomicUsize::new(0));
        let logs = Arc::new(Mutex::new(Vec::new()));
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|t| {
                    let (e, resolves) = (e.clone(), resolves.clone());
                    s.spawn(move || {
                        for i in 0..20_000 {
                            let key = format!("user-{t}-{i}");
                            let (resp, _) = e.resolve(labelled_request(&key, &[])).unwrap().into_resolved().unwrap();
                            let labels: Vec<_> = resp.resolved_flags.iter().map(|f| f.variant.clone()).collect();
                            assert_eq!(labels.len(), 2);
                            assert!(
                                labels.iter().all(|l| l.ends_with("/one"))
                                    || labels.iter().all(|l| l.ends_with("/two")),
                                "{labels:?}"
                            );
                            resolves.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            let swapper = {
                let (e, done) = (e.clone(), done.clone());
                s.spawn(move || {
                    let mut n = 0;
                    while !done.load(Ordering::Relaxed) {
                        e.load_state(if n % 2 == 0 { &two } else { &one }).unwrap();
                        n += 1;
                    }
                    n
                })
            };
            let flusher = {
                let (e, done, logs) = (e.clone(), done.clone(), logs.clone());
                s.spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        logs.lock().unwrap().extend(decoded(e.flush_logs()));
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                })
            };
            for w in workers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            assert!(swapper.join().unwrap() > 1, "the swapper should have swapped");
            flusher.join().unwrap();
        });
        let mut all = std::mem::take(&mut *logs.lock().unwrap());
        all.extend(decoded(e.flush_logs()));
        let n = resolves.load(Ordering::Relaxed);
        assert_eq!(n, 40_000);
        assert_eq!(counted(&all), (2 * n as i64, n), "deferred {defer_resolve_log}, queue {resolve_log_queue}");
        assert_eq!(e.metrics().traps, 0);
        let stats = e.resolve_log_stats();
        assert_eq!(stats.deferred + stats.inline, if defer_resolve_log { n as u64 } else { 0 });
        if defer_resolve_log {
            assert!(stats.deferred > 0, "{stats:?}");
        }
        if resolve_log_queue == 4 {
            assert!(stats.inline > 0, "a tiny queue overflows into inline logging: {stats:?}");
        }
    }
}

#[test]
fn a_flush_contains_every_resolve_made_before_it() {
    let e = native_engine(true);
    e.load_state(&labelled_state("one")).unwrap();
    for round in 1..=5 {
        for i in 0..2_000 {
            e.resolve(labelled_request(&format!("u{round}-{i}"), &["flags/first"])).unwrap();
        }
        assert_eq!(counted(&decoded(e.flush_logs())), (2_000, 2_000), "round {round}");
    }
    assert_eq!(e.resolve_log_stats().deferred + e.resolve_log_stats().inline, 10_000);
    assert!(e.resolve_log_stats().deferred > 0);
}

/// Closing ends the resolve-log thread without losing what it had queued, and the engine
/// keeps answering and logging (inline) afterwards.
#[test]
fn close_ends_the_log_thread_and_loses_no_resolve() {
    let e = native_engine(true);
    assert!(e.has_log_thread());
    e.load_state(&labelled_state("one")).unwrap();
    for i in 0..1_000 {
        e.resolve(labelled_request(&format!("u{i}"), &["flags/first"])).unwrap();
    }
    e.close();
    assert!(!e.has_log_thread());
    e.resolve(labelled_request("late", &["flags/first"])).unwrap();
    e.close();
    assert_eq!(counted(&decoded(e.flush_logs())), (1_001, 1_001));
}

/// Engines in one process (and on one thread) never see each other's logs.
#[test]
fn two_engines_keep_their_logs_apart() {
    for deferred in [false, true] {
        let (a, b) = (native_engine(deferred), native_engine(deferred));
        a.load_state(&labelled_state("one")).unwrap();
        b.load_state(&labelled_state("one")).unwrap();
        for i in 0..300 {
            a.resolve(labelled_request(&format!("a{i}"), &["flags/first"])).unwrap();
            if i % 3 == 0 {
                b.resolve(labelled_request(&format!("b{i}"), &["flags/second"])).unwrap();
            }
        }
        b.register_resolve(1, 10);
        let (la, lb) = (decoded(a.flush_logs()), decoded(b.flush_logs()));
        let flags = |l: &[WriteFlagLogsRequest]| -> Vec<String> {
            l.iter().flat_map(|b| &b.flag_resolve_info).map(|f| f.flag.clone()).collect()
        };
        assert_eq!(flags(&la), ["flags/first"]);
        assert_eq!(flags(&lb), ["flags/second"]);
        assert_eq!((counted(&la), counted(&lb)), ((300, 300), (100, 100)));
        let latencies = |l: &[WriteFlagLogsRequest]| {
            l.iter().filter_map(|b| b.telemetry_data.as_ref()).filter(|t| t.resolve_latency.is_some()).count()
        };
        assert_eq!((latencies(&la), latencies(&lb)), (0, 1), "telemetry stays with its engine");
    }
}

#[test]
fn before_any_state_it_is_not_ready_and_a_rejected_state_changes_nothing() {
    for deferred in [false, true] {
        let e = native_engine(deferred);
        assert!(matches!(e.resolve(labelled_request("k", &[])), Err(EngineError::NotReady)));
        let apply = ApplyFlagsRequest { client_secret: LABEL_SECRET.into(), ..Default::default() };
        assert!(matches!(e.apply(&apply), Err(EngineError::NotReady)));
        assert!(e.flush_logs().is_empty() && e.flush_assign().is_empty());
        let garbage = SetResolverStateRequest { state: vec![0xff; 7], ..labelled_state("x") };
        assert!(matches!(e.load_state(&garbage), Err(EngineError::Resolver(_))));
        assert!(matches!(e.resolve(labelled_request("k", &[])), Err(EngineError::NotReady)));
        assert_eq!(e.metrics().state_loads, 0);
        e.load_state(&labelled_state("one")).unwrap();
        assert!(e.resolve(labelled_request("k", &[])).is_ok());
        assert_eq!(e.metrics().state_loads, 1);
        // A bad state after a good one keeps the good one.
        assert!(e.load_state(&garbage).is_err());
        assert!(e.resolve(labelled_request("k", &[])).is_ok());
        e.register_resolve(1, 25);
        assert!(e.prometheus("native").contains("resolver_id=\"native\""));
    }
}
