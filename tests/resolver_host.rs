//! One provider's host end to end against the loopback fake Confidence: initialize from the
//! CDN, evaluate, recover from a CDN outage, report changed flags, deliver logs on close,
//! and run offline from an initial state without opening a connection.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use confidence_openfeature_provider::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_openfeature_provider::engine::Engine;
use confidence_openfeature_provider::log_upload::UploadConfig;
use confidence_openfeature_provider::resolver_host::{HostConfig, ResolverHost};
use confidence_openfeature_provider::state_sync::SyncConfig;
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::{ResolveProcessRequest, WriteFlagLogsRequest};
use fake_confidence::{secret_digest, FakeConfidence, Fault, Route};
use prost::Message;
use serde_json::json;

fn fixture_payload(account: &str) -> Vec<u8> {
    ClientResolverState { state: fixture_state(), account: account.into(), log_destinations: vec![] }.encode_to_vec()
}

fn config(server: &FakeConfidence) -> HostConfig {
    let mut sync = SyncConfig::new(FIXTURE_SECRET);
    sync.cdn_base_url = server.base_url();
    sync.request_timeout = Duration::from_secs(2);
    let mut upload = UploadConfig::new(FIXTURE_SECRET);
    upload.api_base_url = server.base_url();
    HostConfig {
        sync,
        upload,
        state_update_interval: Duration::from_millis(200),
        flush_interval: Duration::from_millis(300),
        sdk_version: "0.1.0".into(),
        enable_apply_dedup: false,
        disable_exposure_collection: false,
        offline: false,
        initial_state: None,
    }
}

fn host(config: HostConfig) -> ResolverHost {
    let engine: Arc<dyn Engine> = Arc::new(WasmEngine::new(ours().clone(), WasmEngineConfig::default()).unwrap());
    ResolverHost::new(engine, config).unwrap()
}

fn evaluate(host: &ResolverHost, i: usize) {
    let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": format!("v{i}") })), true);
    host.engine().resolve(&ResolveProcessRequest::without_materializations(req)).unwrap();
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
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
    let h = host(config(&server));
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    for i in 0..40 {
        evaluate(&h, i);
    }
    // Conditional polls follow: the CDN answers 304.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(server.counters(Route::Cdn).not_modified >= 1, "{:?}", server.counters(Route::Cdn));
    for i in 40..60 {
        evaluate(&h, i);
    }
    h.close(Duration::from_secs(3)).await.unwrap();
    assert_eq!(exposures(&server), 60, "every exposure, once");
    assert_eq!(h.engine().metrics().state_loads, 1, "a 304 does not reload the state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_outage_at_start_delays_readiness_until_it_ends() {
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), fixture_payload(&fixture_account()), "\"v1\"");
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    let h = host(config(&server));
    h.start().unwrap();
    let err = h.wait_ready(Duration::from_millis(800)).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    server.set_fault(Route::Cdn, Fault::None).await.unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    evaluate(&h, 1);
    h.close(Duration::from_secs(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_is_swapped_in_and_reports_the_changed_flags() {
    let server = FakeConfidence::start().await.unwrap();
    let demo = state_builder::demo_state();
    let mut cfg = config(&server);
    cfg.sync.client_secret = state_builder::demo::DEMO_SECRET.into();
    cfg.upload.client_secret = state_builder::demo::DEMO_SECRET.into();
    let digest = secret_digest(state_builder::demo::DEMO_SECRET);
    server.set_state(digest.clone(), demo.encode_client_resolver_state(), "\"a\"");
    let h = host(cfg);
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();

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
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.engine().metrics().state_loads < 2 {
        assert!(std::time::Instant::now() < deadline, "the new state never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = h.status().snapshot();
    assert_eq!(snapshot.changed_flags, vec!["flags/new-ui".to_string()]);
    assert_eq!(snapshot.etag.as_deref(), Some("\"b\""));
    h.close(Duration::from_secs(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_with_an_initial_state_resolves_at_once_and_never_connects() {
    let server = FakeConfidence::start().await.unwrap();
    let mut cfg = config(&server);
    cfg.offline = true;
    cfg.initial_state = Some(fixture_payload(&fixture_account()));
    let h = host(cfg);
    h.start().unwrap();
    h.wait_ready(Duration::from_millis(10)).await.unwrap();
    evaluate(&h, 1);
    h.close(Duration::from_secs(1)).await.unwrap();
    assert_eq!(server.counters(Route::Cdn).requests, 0);
    assert_eq!(server.counters(Route::Logs).requests, 0);
    assert_eq!(h.uploader().backlog_len(), 1, "logs are kept, not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_initial_state_is_a_clear_error() {
    let server = FakeConfidence::start().await.unwrap();
    let mut cfg = config(&server);
    cfg.initial_state = Some(b"not a state".to_vec());
    let engine: Arc<dyn Engine> = Arc::new(WasmEngine::new(ours().clone(), WasmEngineConfig::default()).unwrap());
    let err = ResolverHost::new(engine, cfg).err().expect("rejected");
    assert!(err.to_string().starts_with("initial state:"), "{err}");
}
