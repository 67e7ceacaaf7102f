//! One provider's host end to end against the loopback fake Confidence: initialize from the
//! CDN, evaluate, recover from a CDN outage, report changed flags, deliver logs on close, run
//! offline from an initial state without opening a connection, and survive a request that
//! breaks an instance. Every test runs against our guest and, when `CONFIDENCE_OFFICIAL_WASM`
//! is set, against Confidence's released binary, which must answer exactly as ours does.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::{Engine, EngineError};
use confidence_host::guest::GuestModule;
use confidence_host::resolver_host::{HostConfig, ResolverHost};
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::{ResolveProcessRequest, WriteFlagLogsRequest};
use fake_confidence::{secret_digest, FakeConfidence, Fault, Route};
use prost::Message;
use serde_json::{json, Value};

fn fixture_payload(account: &str) -> Vec<u8> {
    ClientResolverState { state: fixture_state(), account: account.into(), log_destinations: vec![] }.encode_to_vec()
}

fn config(server: &FakeConfidence) -> HostConfig {
    host_config(&server.base_url())
}

fn host(module: &GuestModule, config: HostConfig) -> ResolverHost {
    let engine: Arc<dyn Engine> = Arc::new(WasmEngine::new(module.clone(), WasmEngineConfig::default()).unwrap());
    ResolverHost::new(engine, config).unwrap()
}

/// One applied resolve of every flag of the host's client, in the oracle's comparable form.
fn evaluate_with(host: &ResolverHost, secret: &str, context: Value) -> Result<Comparable, EngineError> {
    let req = request(secret, &[], to_struct(&context), true);
    let resp = host.engine().resolve(ResolveProcessRequest::without_materializations(req))?;
    Ok(comparable(&resp.into_resolved().expect("no materializations in these states").0))
}

fn evaluate(host: &ResolverHost, i: usize) -> Comparable {
    evaluate_with(host, FIXTURE_SECRET, json!({ "visitor_id": format!("v{i}") })).unwrap()
}

fn exposures(server: &FakeConfidence) -> usize {
    server
        .received_logs()
        .iter()
        .map(|l| WriteFlagLogsRequest::decode(l.body.as_slice()).unwrap().flag_assigned.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initializes_from_the_cdn_and_delivers_every_exposure_by_close() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("initializes_from_the_cdn_and_delivers_every_exposure_by_close") {
        let server = FakeConfidence::start().await.unwrap();
        server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
        let h = host(module, config(&server));
        h.start().unwrap();
        h.wait_ready(Duration::from_secs(5)).await.unwrap();
        let mut answers: Vec<Comparable> = (0..40).map(|i| evaluate(&h, i)).collect();
        // Conditional polls follow: the CDN answers 304.
        until("a 304", Duration::from_secs(5), || server.counters(Route::Cdn).not_modified >= 1).await;
        answers.extend((40..60).map(|i| evaluate(&h, i)));
        h.close(Duration::from_secs(3)).await.unwrap();
        assert_eq!(exposures(&server), 60, "{name}: every exposure, once");
        assert_eq!(h.engine().metrics().state_loads, 1, "{name}: a 304 does not reload the state");
        same.check(name, answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_outage_at_start_delays_readiness_until_it_ends() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("a_cdn_outage_at_start_delays_readiness_until_it_ends") {
        let server = FakeConfidence::start().await.unwrap();
        server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
        server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
        let h = host(module, config(&server));
        h.start().unwrap();
        let err = h.wait_ready(Duration::from_millis(800)).await.unwrap_err();
        assert!(err.to_string().contains("503"), "{name}: {err}");
        assert!(matches!(evaluate_with(&h, FIXTURE_SECRET, json!({})), Err(EngineError::NotReady)), "{name}");
        server.set_fault(Route::Cdn, Fault::None).await.unwrap();
        h.wait_ready(Duration::from_secs(5)).await.unwrap();
        let answers: Vec<Comparable> = (0..10).map(|i| evaluate(&h, i)).collect();
        h.close(Duration::from_secs(3)).await.unwrap();
        assert_eq!(exposures(&server), 10, "{name}");
        same.check(name, answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_upload_disabled_states_arrive_but_no_log_leaves() {
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
    let h = host(ours(), HostConfig { disable_log_upload: true, ..config(&server) });
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    for i in 0..25 {
        evaluate(&h, i);
    }
    // Several flush rounds (counted by the state polls that run beside them), an explicit
    // flush and close: nothing is sent.
    until("several poll rounds", Duration::from_secs(5), || server.counters(Route::Cdn).requests >= 4).await;
    assert_eq!(h.flush().await.unwrap(), 0);
    h.close(Duration::from_secs(3)).await.unwrap();
    assert!(server.counters(Route::Cdn).requests >= 1, "states are still fetched");
    assert_eq!(server.received_logs().len(), 0, "no log upload with disable_log_upload");
    // What would have been sent is kept (bounded) rather than silently lost.
    let kept: usize =
        h.take_logs().await.iter().map(|b| WriteFlagLogsRequest::decode(b.as_ref()).unwrap().flag_assigned.len()).sum();
    assert_eq!(kept, 25);
}

/// Contexts that reach every rule of the demo state's `new-ui` flag.
fn demo_contexts() -> Vec<Value> {
    (0..12)
        .map(|i| match i % 4 {
            0 => json!({ "targeting_key": format!("u{i}"), "country": "SE" }),
            1 => json!({ "targeting_key": format!("u{i}"), "plan": "enterprise" }),
            2 => json!({ "targeting_key": format!("u{i}"), "plan": "free", "app": { "version": "2.1.0" } }),
            _ => json!({ "targeting_key": format!("u{i}") }),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_is_swapped_in_and_reports_the_changed_flags() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("a_changed_state_is_swapped_in_and_reports_the_changed_flags") {
        let server = FakeConfidence::start().await.unwrap();
        let demo = state_builder::demo_state();
        let mut cfg = config(&server);
        let secret = state_builder::demo::DEMO_SECRET;
        cfg.sync.client_secret = secret.into();
        cfg.upload.client_secret = secret.into();
        let digest = secret_digest(secret);
        server.set_state(digest.clone(), demo.encode_client_resolver_state(), "\"a\"");
        let h = host(module, cfg);
        h.start().unwrap();
        h.wait_ready(Duration::from_secs(5)).await.unwrap();
        let answer_all = |h: &ResolverHost| -> Vec<Comparable> {
            demo_contexts().into_iter().map(|c| evaluate_with(h, secret, c).unwrap()).collect()
        };
        let before = answer_all(&h);

        // Same state but one flag archived.
        let mut changed = demo.proto.clone();
        let flag = changed.flags.iter_mut().find(|f| f.name == "flags/new-ui").unwrap();
        flag.state = 2;
        let payload = ClientResolverState {
            state: changed.encode_to_vec(),
            account: demo.account_id.clone(),
            log_destinations: vec![],
        };
        server.set_state(digest, payload.encode_to_vec(), "\"b\"");
        // The swap is reported once the status has it (the engine loads it a moment before).
        until("the new state", Duration::from_secs(5), || h.status().snapshot().etag.as_deref() == Some("\"b\"")).await;
        assert_eq!(h.engine().metrics().state_loads, 2, "{name}");
        let snapshot = h.status().snapshot();
        assert_eq!(snapshot.changed_flags, vec!["flags/new-ui".to_string()], "{name}");
        assert_eq!(snapshot.etag.as_deref(), Some("\"b\""), "{name}");
        let after = answer_all(&h);
        assert_ne!(before, after, "{name}: the archived flag answers differently");
        h.close(Duration::from_secs(3)).await.unwrap();
        same.check(name, (before, after));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_with_an_initial_state_resolves_at_once_and_never_connects() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("offline_with_an_initial_state_resolves_at_once_and_never_connects") {
        let server = FakeConfidence::start().await.unwrap();
        let mut cfg = config(&server);
        cfg.offline = true;
        cfg.initial_state = Some(fixture_payload(&fixture_account()));
        let h = host(module, cfg);
        h.start().unwrap();
        h.wait_ready(Duration::from_millis(10)).await.unwrap();
        let answers = vec![
            evaluate(&h, 1),
            evaluate_with(&h, FIXTURE_SECRET, json!({ "visitor_id": "tutorial_visitor" })).unwrap(),
        ];
        h.close(Duration::from_secs(1)).await.unwrap();
        assert_eq!(server.counters(Route::Cdn).requests, 0, "{name}");
        assert_eq!(server.counters(Route::Logs).requests, 0, "{name}");
        // One batch per pooled instance that logged.
        let kept = h.uploader().backlog_len();
        assert!((1..=2).contains(&kept), "{name}: logs are kept, not sent ({kept} batches)");
        same.check(name, answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_initial_state_is_a_clear_error() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("a_bad_initial_state_is_a_clear_error") {
        let server = FakeConfidence::start().await.unwrap();
        let rejected_by = |initial: Vec<u8>| {
            let mut cfg = config(&server);
            cfg.initial_state = Some(initial);
            let engine: Arc<dyn Engine> =
                Arc::new(WasmEngine::new(module.clone(), WasmEngineConfig::default()).unwrap());
            ResolverHost::new(engine, cfg).err().expect("rejected").to_string()
        };
        // Not a wrapper at all: the host refuses it before the guest sees it.
        let not_a_wrapper = rejected_by(b"not a state".to_vec());
        assert!(not_a_wrapper.starts_with("initial state:"), "{name}: {not_a_wrapper}");
        // A wrapper around bytes that are no `ResolverState`: the host decodes the state to
        // check it holds this client's credential, so it refuses it before the guest sees it too.
        let broken =
            ClientResolverState { state: vec![0x0a, 0xff, 0xff], account: "acct".into(), log_destinations: vec![] };
        let undecodable = rejected_by(broken.encode_to_vec());
        assert!(undecodable.starts_with("initial state: cannot decode the resolver state"), "{name}: {undecodable}");
        same.check(name, (not_a_wrapper, undecodable));
    }
}

/// An unknown client secret of multi-byte characters: our guest answers an error; the released
/// binary traps on it (see tests/differential.rs), which the host must absorb.
const BREAKING_SECRET: &str = "ééééééééé";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_breaks_an_instance_fails_alone_and_loses_no_exposure() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("a_request_that_breaks_an_instance_fails_alone_and_loses_no_exposure") {
        let server = FakeConfidence::start().await.unwrap();
        server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
        let mut cfg = config(&server);
        // Only close() uploads: every exposure must survive the broken instance until then.
        cfg.flush_interval = Duration::from_secs(60);
        let h = host(module, cfg);
        h.start().unwrap();
        h.wait_ready(Duration::from_secs(5)).await.unwrap();
        let mut answers: Vec<Comparable> = (0..20).map(|i| evaluate(&h, i)).collect();
        // Twice: the pool's two instances take turns, and both have logged by now.
        for _ in 0..2 {
            let err = evaluate_with(&h, BREAKING_SECRET, json!({ "visitor_id": "v" })).unwrap_err();
            // The one documented difference: how the failing call fails.
            match name {
                "ours" => assert!(matches!(err, EngineError::Resolver(_)), "{name}: {err}"),
                _ => assert!(matches!(err, EngineError::Crashed(_)), "{name}: {err}"),
            }
        }
        answers.extend((20..40).map(|i| evaluate(&h, i)));
        h.close(Duration::from_secs(3)).await.unwrap();
        let m = h.engine().metrics();
        assert_eq!(m.traps, if name == "ours" { 0 } else { 2 }, "{name}");
        assert_eq!(m.state_loads, 1, "{name}: a replaced instance reloads the last state, not a new one");
        assert_eq!(exposures(&server), 40, "{name}: the broken instances' exposures were salvaged");
        same.check(name, answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_an_upload_delivers_every_exposure_once() {
    let mut same = SameAsOurs::default();
    for (name, module) in modules_under_test("close_during_an_upload_delivers_every_exposure_once") {
        let server = FakeConfidence::start().await.unwrap();
        server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
        let mut cfg = config(&server);
        cfg.flush_interval = Duration::from_millis(100);
        let h = host(module, cfg);
        h.start().unwrap();
        h.wait_ready(Duration::from_secs(5)).await.unwrap();
        // The server takes every upload, slowly: close() comes while the flush loop's is in flight.
        let slow = Duration::from_millis(800);
        server.set_fault(Route::Logs, Fault::Slow(slow)).await.unwrap();
        let answers: Vec<Comparable> = (0..10).map(|i| evaluate(&h, i)).collect();
        until("an upload to start", Duration::from_secs(5), || server.counters(Route::Logs).requests > 0).await;
        h.close(Duration::from_secs(3)).await.unwrap();
        // Whatever was sent lands within one slow answer, abandoned or not: time passing is
        // what this waits for.
        tokio::time::sleep(slow + Duration::from_millis(300)).await;
        let mut ids = std::collections::BTreeSet::new();
        for log in server.received_logs() {
            for event in WriteFlagLogsRequest::decode(log.body.as_slice()).unwrap().flag_assigned {
                assert!(ids.insert(event.resolve_id.clone()), "{name}: exposure {} delivered twice", event.resolve_id);
            }
        }
        assert_eq!(ids.len(), 10, "{name}: every exposure");
        same.check(name, answers);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_close_is_quiet_and_sends_nothing() {
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
    let h = host(ours(), config(&server));
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    evaluate(&h, 0);
    h.close(Duration::from_secs(3)).await.unwrap();
    let requests = server.counters(Route::Logs).requests;
    assert_eq!(h.close(Duration::from_secs(3)).await.unwrap(), 0, "closing again is not an error");
    assert_eq!(server.counters(Route::Logs).requests, requests);
    assert_eq!(exposures(&server), 1);
}
