//! What a host accepts as its state, whichever way it comes (a CDN download, an initial state,
//! a snapshot): only a state that holds a credential for the host's own client secret. Any
//! other would answer every evaluation "client secret not found", so it is refused and the
//! state in force keeps answering.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use confidence_host::engine::native::{NativeEngine, NativeEngineConfig};
use confidence_host::engine::{Engine, EngineError};
use confidence_host::notices::Level;
use confidence_host::resolver_host::{HostConfig, ResolverHost};
use confidence_host::snapshot::{self, Snapshot, SnapshotKey};
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveProcessRequest;
use fake_confidence::{secret_digest, FakeConfidence, Fault, Route};
use prost::Message;
use serde_json::json;

const NO_CREDENTIAL: &str = "no credential for this client secret";

fn wrapper(state: Vec<u8>, account: &str) -> Vec<u8> {
    ClientResolverState { state, account: account.to_string(), log_destinations: vec![] }.encode_to_vec()
}

fn engine() -> Arc<dyn Engine> {
    Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap())
}

fn config(server: &FakeConfidence) -> HostConfig {
    HostConfig { disable_log_upload: true, ..host_config(&server.base_url()) }
}

fn resolves(h: &ResolverHost) -> Result<usize, EngineError> {
    let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": "v1" })), false);
    let resp = h.engine().resolve(ResolveProcessRequest::without_materializations(req))?;
    Ok(resp.into_resolved().expect("no materializations").0.resolved_flags.len())
}

/// States with a valid wrapper and account that cannot serve the fixture client.
fn states_without_the_credential() -> Vec<(&'static str, Vec<u8>)> {
    vec![("an empty state", Vec::new()), ("another client's state", labelled_state("other").state)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_without_this_clients_credential_never_replaces_the_good_state() {
    let server = FakeConfidence::start().await.unwrap();
    let digest = secret_digest(FIXTURE_SECRET);
    server.set_state(digest.clone(), wrapper(fixture_state(), &fixture_account()), "\"v1\"");
    let h = ResolverHost::new(engine(), config(&server)).unwrap();
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    let flags = resolves(&h).unwrap();
    assert!(flags > 0);

    for (i, (name, state)) in states_without_the_credential().into_iter().enumerate() {
        let failures = h.status().failures();
        server.set_state(digest.clone(), wrapper(state, "acct"), format!("\"bad{i}\""));
        until(&format!("{name} to be refused"), Duration::from_secs(5), || h.status().failures() > failures).await;
        let status = h.status().snapshot();
        let error = status.last_error.unwrap_or_default();
        assert!(error.contains(NO_CREDENTIAL), "{name}: {error}");
        assert!(!error.contains(FIXTURE_SECRET), "{name}: the secret never appears in a message");
        assert_eq!(status.etag.as_deref(), Some("\"v1\""), "{name}: the good state is still in force");
        assert_eq!(resolves(&h).unwrap(), flags, "{name}: evaluations answer from the good state");
        assert_eq!(h.engine().metrics().state_loads, 1, "{name}: never loaded");
    }
    h.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_state_without_this_clients_credential_is_an_error_at_construction() {
    let server = FakeConfidence::start().await.unwrap();
    for (name, state) in states_without_the_credential() {
        let config = HostConfig { initial_state: Some(wrapper(state, "acct")), ..config(&server) };
        let err = ResolverHost::new(engine(), config).err().unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(err.to_string().contains(NO_CREDENTIAL), "{name}: {err}");
        assert!(!err.to_string().contains(FIXTURE_SECRET), "{name}: the secret never appears in a message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentic_snapshot_without_this_clients_credential_is_ignored() {
    let dir = std::env::temp_dir().join(format!("cf-intake-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = FakeConfidence::start().await.unwrap();
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    for (i, (name, state)) in states_without_the_credential().into_iter().enumerate() {
        // Written with this client's secret: authentic, yet unusable.
        let path = dir.join(format!("{i}.snap"));
        let body = wrapper(state, "acct");
        let file =
            snapshot::encode(&SnapshotKey::new(FIXTURE_SECRET), &Snapshot { body, etag: None, encrypted: false });
        std::fs::write(&path, file).unwrap();
        let h = ResolverHost::new(engine(), HostConfig { snapshot_path: Some(path), ..config(&server) }).unwrap();
        h.start().unwrap();
        let err = h.wait_ready(Duration::from_millis(200)).await.expect_err(name);
        assert!(err.to_string().contains("503"), "{name}: the CDN failure is the error: {err}");
        assert!(matches!(resolves(&h), Err(EngineError::NotReady)), "{name}: nothing was loaded");
        let warned: Vec<String> =
            h.notices().take().into_iter().filter(|n| n.level == Level::Warn).map(|n| n.message).collect();
        assert!(
            warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains(NO_CREDENTIAL)),
            "{name}: {warned:?}"
        );
        h.close(Duration::from_secs(1)).await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
