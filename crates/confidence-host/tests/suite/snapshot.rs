//! The last-known-good snapshot against the loopback fake Confidence: written exactly as
//! downloaded after each applied state, served (and revalidated with `If-None-Match`) when the
//! CDN is down at start, ignored with a warning when corrupt, truncated or another client's,
//! and accepted as an initial state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use confidence_host::crypto::{encrypt_state, StateKey};
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

const KEY: [u8; 32] = [7; 32];

fn payload() -> Vec<u8> {
    ClientResolverState { state: fixture_state(), account: fixture_account(), log_destinations: vec![] }.encode_to_vec()
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cf-snapshot-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(server: &FakeConfidence, snapshot_path: &Path, key: Option<StateKey>) -> HostConfig {
    let mut config = host_config(&server.base_url());
    config.sync.encryption_key = key;
    HostConfig {
        flush_interval: Duration::from_secs(10),
        disable_log_upload: true,
        snapshot_path: Some(snapshot_path.to_path_buf()),
        ..config
    }
}

fn host(config: HostConfig) -> ResolverHost {
    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    ResolverHost::new(engine, config).unwrap()
}

fn resolves(h: &ResolverHost) -> Result<usize, EngineError> {
    let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": "v1" })), false);
    let resp = h.engine().resolve(ResolveProcessRequest::without_materializations(req))?;
    Ok(resp.into_resolved().expect("no materializations").0.resolved_flags.len())
}

fn warnings(h: &ResolverHost) -> Vec<String> {
    h.notices().take().into_iter().filter(|n| n.level == Level::Warn).map(|n| n.message).collect()
}

/// Runs a host against a healthy CDN until its first state is in force, then closes it.
async fn fill_snapshot(server: &FakeConfidence, path: &Path, key: Option<StateKey>) {
    let h = host(config(server, path, key));
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    h.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_saved_byte_for_byte_and_served_when_the_cdn_is_down_at_start() {
    let dir = scratch("serve");
    let path = dir.join("state.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fill_snapshot(&server, &path, None).await;

    let saved = snapshot::decode(&std::fs::read(&path).unwrap(), &SnapshotKey::new(FIXTURE_SECRET), false)
        .expect("a valid snapshot");
    assert_eq!(saved, Snapshot { body: payload(), etag: Some("\"v1\"".into()), encrypted: false });
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary files left behind: {leftovers:?}");

    // Restart during an outage: ready from the snapshot once the initialize timeout passes.
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    let h = host(config(&server, &path, None));
    h.start().unwrap();
    let started = Instant::now();
    h.wait_ready(Duration::from_millis(600)).await.expect("served from the snapshot");
    assert!(started.elapsed() >= Duration::from_millis(600), "the CDN had the whole timeout");
    assert!(resolves(&h).unwrap() > 0);
    let snapshot = h.status().snapshot();
    assert!(snapshot.from_snapshot);
    assert_eq!(snapshot.etag.as_deref(), Some("\"v1\""));
    assert_eq!(snapshot.last_success, None, "a snapshot is not a CDN success");
    let warned = warnings(&h);
    assert!(
        warned.iter().any(|w| w.contains("serving the last-known-good state snapshot") && w.contains("503")),
        "{warned:?}"
    );

    // The CDN returns: the snapshot is revalidated with If-None-Match and confirmed by a 304.
    server.reset_counters();
    server.set_fault(Route::Cdn, Fault::None).await.unwrap();
    until("a 304 for the snapshot's ETag", Duration::from_secs(5), || server.counters(Route::Cdn).not_modified > 0)
        .await;
    until("the snapshot flag to clear", Duration::from_secs(5), || !h.status().snapshot().from_snapshot).await;
    assert_eq!(h.engine().metrics().state_loads, 1, "a 304 keeps the snapshot's state");
    h.close(Duration::from_secs(1)).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_download_stays_encrypted_on_disk() {
    let dir = scratch("encrypted");
    let path = dir.join("state.snap");
    let key = StateKey::from_bytes(KEY);
    let body = encrypt_state(&key, [3; 12], &payload());
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), body.clone(), "\"e1\"");
    fill_snapshot(&server, &path, Some(key.clone())).await;
    let file = std::fs::read(&path).unwrap();
    let saved = snapshot::decode(&file, &SnapshotKey::new(FIXTURE_SECRET), true).unwrap();
    assert_eq!(saved.body, body, "exactly as downloaded");
    let account = fixture_account();
    assert!(!file.windows(account.len()).any(|w| w == account.as_bytes()), "no plaintext on disk");
    assert!(payload().windows(account.len()).any(|w| w == account.as_bytes()), "the check can fail");

    // A provider without the key must not use it.
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    let h = host(config(&server, &path, None));
    h.start().unwrap();
    assert!(h.wait_ready(Duration::from_millis(300)).await.is_err());
    let warned = warnings(&h);
    assert!(warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains("encrypted")), "{warned:?}");
    h.close(Duration::from_secs(1)).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_truncated_foreign_and_garbage_snapshots_are_ignored_with_a_warning() {
    let dir = scratch("bad");
    let good_path = dir.join("good.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fill_snapshot(&server, &good_path, None).await;
    let good = std::fs::read(&good_path).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    let foreign = snapshot::encode(
        &SnapshotKey::new("another-secret"),
        &Snapshot { body: payload(), etag: None, encrypted: false },
    );
    // A snapshot whose checksum holds but whose body is not a state.
    let not_a_state = snapshot::encode(
        &SnapshotKey::new(FIXTURE_SECRET),
        &Snapshot { body: vec![0xff; 64], etag: None, encrypted: false },
    );
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("truncated", good[..good.len() - 10].to_vec(), "truncated"),
        ("flipped", flipped, "corrupt"),
        ("foreign", foreign, "another client secret"),
        ("garbage", b"definitely not a snapshot".to_vec(), "not a snapshot"),
        ("not a state", not_a_state, "decode"),
    ];
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    for (name, bytes, reason) in cases {
        let path = dir.join(format!("{name}.snap"));
        std::fs::write(&path, &bytes).unwrap();
        let h = host(config(&server, &path, None));
        h.start().unwrap();
        let err = h.wait_ready(Duration::from_millis(200)).await.expect_err(name);
        assert!(err.to_string().contains("503"), "{name}: the CDN failure is the error: {err}");
        assert!(matches!(resolves(&h), Err(EngineError::NotReady)), "{name}: nothing was loaded");
        let warned = warnings(&h);
        assert!(
            warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains(reason)),
            "{name}: {warned:?}"
        );
        h.close(Duration::from_secs(1)).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: an ignored snapshot is left as it was");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_file_is_an_initial_state_and_its_etag_is_revalidated() {
    let dir = scratch("initial");
    let path = dir.join("state.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fill_snapshot(&server, &path, None).await;
    server.reset_counters();

    let baked = std::fs::read(&path).unwrap();
    let h = host(HostConfig { initial_state: Some(baked), snapshot_path: None, ..config(&server, &path, None) });
    assert!(resolves(&h).unwrap() > 0, "ready before any network");
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(1)).await.unwrap();
    until("a 304 for the baked snapshot", Duration::from_secs(5), || server.counters(Route::Cdn).not_modified > 0)
        .await;
    assert_eq!(h.engine().metrics().state_loads, 1);
    h.close(Duration::from_secs(1)).await.unwrap();

    // Another client's snapshot is refused loudly: it is configuration, not a cache.
    let foreign =
        snapshot::encode(&SnapshotKey::new("other"), &Snapshot { body: payload(), etag: None, encrypted: false });
    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    let err = ResolverHost::new(engine, HostConfig { initial_state: Some(foreign), ..config(&server, &path, None) })
        .err()
        .expect("a foreign initial state");
    assert!(err.to_string().contains("another client secret"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_written_costs_a_warning_not_the_state() {
    let dir = scratch("unwritable");
    let path = dir.join("missing-dir").join("state.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    let h = host(config(&server, &path, None));
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert!(resolves(&h).unwrap() > 0);
    let warned = warnings(&h);
    assert!(warned.iter().any(|w| w.contains("cannot write the state snapshot")), "{warned:?}");
    h.close(Duration::from_secs(1)).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdn_state_arriving_first_wins_over_the_snapshot() {
    let dir = scratch("race");
    let path = dir.join("state.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fill_snapshot(&server, &path, None).await;
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v2\"");
    // Slow but within the timeout: the download, not the snapshot, is in force.
    server.set_fault(Route::Cdn, Fault::FailNext(1, Box::new(Fault::Slow(Duration::from_millis(300))))).await.unwrap();
    let h = host(config(&server, &path, None));
    h.start().unwrap();
    h.wait_ready(Duration::from_secs(3)).await.unwrap();
    let status = h.status().snapshot();
    assert!(!status.from_snapshot);
    assert_eq!(status.etag.as_deref(), Some("\"v2\""));
    assert!(warnings(&h).is_empty());
    h.close(Duration::from_secs(1)).await.unwrap();
    let saved = snapshot::decode(&std::fs::read(&path).unwrap(), &SnapshotKey::new(FIXTURE_SECRET), false).unwrap();
    assert_eq!(saved.etag.as_deref(), Some("\"v2\""), "the newer download replaced the snapshot");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A second client's secret, for snapshots relabelled from the fixture client to it.
const OTHER_SECRET: &str = "other-client-secret";

/// [`config`] for the client `secret` (state sync and uploads).
fn config_for(secret: &str, server: &FakeConfidence, snapshot_path: &Path) -> HostConfig {
    let mut config = config(server, snapshot_path, None);
    config.sync.client_secret = secret.to_string();
    config.upload.client_secret = secret.to_string();
    config
}

/// One state serving the fixture client and [`OTHER_SECRET`]'s: a relabelled snapshot of it
/// would be usable by the other client if it were trusted.
fn two_client_payload() -> Vec<u8> {
    use state_builder::{obj, s_bool, v_bool, ClientBuilder, FlagBuilder, RuleBuilder, SegmentBuilder, StateBuilder};
    StateBuilder::new("acct")
        .client(ClientBuilder::new("one").secret(FIXTURE_SECRET))
        .client(ClientBuilder::new("two").secret(OTHER_SECRET))
        .segment(SegmentBuilder::new("everyone"))
        .flag(
            FlagBuilder::new("shared")
                .field("on", s_bool())
                .variant("yes", obj([("on", v_bool(true))]))
                .clients(["one", "two"])
                .rule(RuleBuilder::full("all", "everyone", "yes")),
        )
        .build()
        .encode_client_resolver_state()
}

/// What someone without the secret can do to a snapshot: name another client's secret digest
/// (public: it is in the CDN URL) and recompute a plain SHA-256 over the content.
fn relabel(snapshot: &[u8], secret: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut forged = snapshot.to_vec();
    forged[8..40].copy_from_slice(&Sha256::digest(secret.as_bytes()));
    let content = forged.len() - 32;
    let trailer = Sha256::digest(&forged[..content]);
    forged[content..].copy_from_slice(&trailer);
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_relabelled_for_another_client_is_not_authentic() {
    let dir = scratch("relabelled");
    let path = dir.join("state.snap");
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), two_client_payload(), "\"v1\"");
    fill_snapshot(&server, &path, None).await;
    let forged_path = dir.join("forged.snap");
    std::fs::write(&forged_path, relabel(&std::fs::read(&path).unwrap(), OTHER_SECRET)).unwrap();

    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    for (secret, reason) in [(OTHER_SECRET, "not authentic"), (FIXTURE_SECRET, "another client secret")] {
        let h = host(config_for(secret, &server, &forged_path));
        h.start().unwrap();
        let err = h.wait_ready(Duration::from_millis(200)).await.expect_err("a forged snapshot is not served");
        assert!(err.to_string().contains("503"), "{secret}: {err}");
        assert!(matches!(resolves(&h), Err(EngineError::NotReady)), "{secret}: nothing was loaded");
        let warned = warnings(&h);
        assert!(
            warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains(reason)),
            "{secret}: {warned:?}"
        );
        h.close(Duration::from_secs(1)).await.unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A snapshot as the previous release wrote it (`CFSNAP01`: a plain SHA-256 trailer).
fn cfsnap01(secret: &str, body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = b"CFSNAP01".to_vec();
    out.extend_from_slice(&Sha256::digest(secret.as_bytes()));
    out.push(0);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(body);
    let trailer = Sha256::digest(&out);
    out.extend_from_slice(&trailer);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_format_snapshot_is_ignored_never_trusted() {
    let dir = scratch("old-format");
    let path = dir.join("state.snap");
    let old = cfsnap01(FIXTURE_SECRET, &payload());
    std::fs::write(&path, &old).unwrap();
    let server = FakeConfidence::start().await.unwrap();
    server.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    let h = host(config(&server, &path, None));
    h.start().unwrap();
    assert!(h.wait_ready(Duration::from_millis(200)).await.is_err(), "an old snapshot is not served");
    assert!(matches!(resolves(&h), Err(EngineError::NotReady)));
    let warned = warnings(&h);
    assert!(
        warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains("old snapshot format")),
        "{warned:?}"
    );
    h.close(Duration::from_secs(1)).await.unwrap();

    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    let err = ResolverHost::new(engine, HostConfig { initial_state: Some(old), ..config(&server, &path, None) })
        .err()
        .expect("an old snapshot as initial state");
    assert!(err.to_string().contains("old snapshot format"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("mode");
    let path = dir.join("state.snap");
    // A file already there with wider permissions is replaced, not reused.
    std::fs::write(&path, b"older").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = FakeConfidence::start().await.unwrap();
    server.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fill_snapshot(&server, &path, None).await;
    assert_ne!(std::fs::read(&path).unwrap(), b"older", "the snapshot was written");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Creates a FIFO: opening it for reading blocks until some writer opens it.
#[cfg(unix)]
fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Bounds a test that a reader blocked on a FIFO would hang: once `limit` passes without
/// [`FifoRescue::finish`], it keeps opening the FIFOs for writing, which releases such a reader
/// (it then reads end-of-file), and remembers that it had to.
#[cfg(unix)]
struct FifoRescue {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

#[cfg(unix)]
impl FifoRescue {
    fn after(limit: Duration, fifos: Vec<PathBuf>) -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::mpsc::RecvTimeoutError;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if stopped.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                return false;
            }
            loop {
                for fifo in &fifos {
                    // Non-blocking: without a reader this fails at once instead of waiting.
                    let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo);
                }
                if stopped.recv_timeout(Duration::from_millis(50)) != Err(RecvTimeoutError::Timeout) {
                    return true;
                }
            }
        });
        FifoRescue { stop, thread }
    }

    /// Whether a reader had to be released.
    fn finish(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().expect("the rescue thread")
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_snapshot_path_neither_hangs_initialize_nor_stalls_other_providers() {
    let dir = scratch("fifo");
    // As many stuck providers as the runtime has workers: a blocking read would hold them all.
    let fifos = vec![dir.join("one.snap"), dir.join("two.snap")];
    for fifo in &fifos {
        make_fifo(fifo);
    }
    let rescue = FifoRescue::after(Duration::from_secs(10), fifos.clone());
    let down = FakeConfidence::start().await.unwrap();
    down.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    let healthy = FakeConfidence::start().await.unwrap();
    healthy.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");

    let stuck: Vec<_> = fifos
        .iter()
        .map(|fifo| {
            let h = Arc::new(host(config(&down, fifo, None)));
            h.start().unwrap();
            tokio::spawn(async move {
                let settled =
                    tokio::time::timeout(Duration::from_secs(5), h.wait_ready(Duration::from_millis(300))).await;
                (h, settled)
            })
        })
        .collect();
    let other = host(HostConfig { snapshot_path: None, ..config(&healthy, &dir.join("unused.snap"), None) });
    other.start().unwrap();
    other.wait_ready(Duration::from_secs(5)).await.expect("another provider loads its state meanwhile");
    assert!(resolves(&other).unwrap() > 0);

    let mut settled = Vec::new();
    for task in stuck {
        settled.push(task.await.expect("the initialize task"));
    }
    assert!(!rescue.finish(), "initialize waited on the FIFO until a writer released it");
    for (h, outcome) in settled {
        let err = outcome.expect("initialize settles").expect_err("a FIFO is no snapshot");
        assert!(err.to_string().contains("503"), "the CDN failure is the error: {err}");
        let warned = warnings(&h);
        assert!(
            warned.iter().any(|w| w.contains("ignoring the state snapshot") && w.contains("not a regular file")),
            "{warned:?}"
        );
        h.close(Duration::from_secs(1)).await.unwrap();
    }
    other.close(Duration::from_secs(1)).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
