//! Ties the pieces together for one provider: an engine, the CDN sync loop feeding it, and
//! the flush loop draining it into the log uploader. Knows nothing of JS; `lib.rs` wraps it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confidence_proto::admin::ClientResolverState;
use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::{sdk, Sdk, SdkId};
use confidence_resolver::proto::confidence::iam::v1::client_credential::Credential;
use prost::Message;
use tokio::sync::watch;

use crate::crypto::StateKey;
use crate::engine::{Engine, EngineError};
use crate::http;
use crate::log_upload::{LogUploader, UploadConfig, UploadError};
use crate::notices::{Level, Notices};
use crate::snapshot::{self, PendingRead, Snapshot, SnapshotKey};
use crate::state_sync::{
    decode_body, run_sync_loop, ApplyError, ConfigError, FirstStateError, StateFetcher, StateSink, StateUpdate,
    SyncConfig, SyncStatus,
};

/// Why a host cannot be built or started. The addon maps each variant to a JS error code.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The state sync configuration can never work (empty secret, bad CDN URL, ...).
    #[error(transparent)]
    Sync(#[from] ConfigError),
    #[error("invalid API base URL: {0}")]
    ApiBaseUrl(String),
    #[error(transparent)]
    Net(#[from] http::NetError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("initial state: {0}")]
    InitialState(#[from] OpenError),
    #[error(transparent)]
    NotReady(#[from] FirstStateError),
}

/// Why a state given to the host (an initial state or a snapshot) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Body(#[from] crate::state_sync::SyncError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

#[derive(Clone, Debug)]
pub struct HostConfig {
    pub sync: SyncConfig,
    pub upload: UploadConfig,
    pub state_update_interval: Duration,
    pub flush_interval: Duration,
    pub sdk_version: String,
    pub enable_apply_dedup: bool,
    pub disable_exposure_collection: bool,
    /// Never open a connection: resolve from `initial_state` only, keep logs in the backlog.
    pub offline: bool,
    /// Zero egress for logs: states are fetched as usual, but resolve logs, exposures and
    /// telemetry are never uploaded; they wait in the bounded backlog, as offline (where the
    /// test kit can read them), oldest dropped and counted when it is full.
    pub disable_log_upload: bool,
    /// A `ClientResolverState` as the CDN serves it (encrypted when a key is configured), or a
    /// snapshot file's content (`snapshot.rs`).
    pub initial_state: Option<Vec<u8>>,
    /// Where the last-known-good snapshot lives: written after every applied download, served
    /// when the first state cannot be fetched in time.
    pub snapshot_path: Option<PathBuf>,
}

impl HostConfig {
    /// The defaults for `client_secret`: Confidence's production endpoints, a state poll every
    /// 30 s, a log flush every 10 s, uploads on, no initial state or snapshot.
    pub fn new(client_secret: &str) -> Self {
        HostConfig {
            sync: SyncConfig::new(client_secret),
            upload: UploadConfig::new(client_secret),
            state_update_interval: Duration::from_secs(30),
            flush_interval: Duration::from_secs(10),
            sdk_version: env!("CARGO_PKG_VERSION").to_string(),
            enable_apply_dedup: false,
            disable_exposure_collection: false,
            offline: false,
            disable_log_upload: false,
            initial_state: None,
            snapshot_path: None,
        }
    }

    /// Whether logs are ever sent (not offline, uploads not disabled).
    pub fn uploads(&self) -> bool {
        !self.offline && !self.disable_log_upload
    }
}

/// Applies fetched states to the engine, keeps the uploader's route in step and writes the
/// snapshot.
struct EngineSink {
    engine: Arc<dyn Engine>,
    uploader: Arc<LogUploader>,
    sdk: Sdk,
    enable_apply_dedup: bool,
    disable_exposure_collection: bool,
    /// Held for a whole swap, so a snapshot restore cannot interleave with a download's apply.
    applied: Mutex<Applied>,
    /// Every state loaded must hold a credential for it.
    client_secret: String,
    snapshot: Option<SnapshotTarget>,
    notices: Arc<Notices>,
}

#[derive(Default)]
struct Applied {
    /// Encoded flags of the state in force, to report which flags a swap changed.
    flags: HashMap<String, Vec<u8>>,
    /// States loaded so far.
    loads: u64,
}

struct SnapshotTarget {
    path: PathBuf,
    key: SnapshotKey,
    encrypted: bool,
}

/// What opens a state given to the host (an initial state or a snapshot).
#[derive(Clone)]
struct Keys {
    snapshot: SnapshotKey,
    encryption: Option<StateKey>,
}

/// Whether `secret` can resolve against `state`: the resolver knows only secrets of credentials
/// named under one of the state's clients (`confidence_resolver::ResolverState::from_proto`).
fn has_credential(state: &ResolverState, secret: &str) -> bool {
    state.client_credentials.iter().any(|credential| {
        matches!(&credential.credential, Some(Credential::ClientSecret(s)) if s.secret == secret)
            && state.clients.iter().any(|client| credential.name.starts_with(client.name.as_str()))
    })
}

/// The body of a snapshot (checked to be this client's and authentic) or, unless
/// `snapshot_only`, a bare CDN body, decoded.
fn open(bytes: &[u8], keys: &Keys, snapshot_only: bool) -> Result<(ClientResolverState, Option<String>), OpenError> {
    let (body, etag) = if snapshot_only || snapshot::is_snapshot(bytes) {
        let s = snapshot::decode(bytes, &keys.snapshot, keys.encryption.is_some())?;
        (s.body, s.etag)
    } else {
        (bytes.to_vec(), None)
    };
    Ok((decode_body(&body, keys.encryption.as_ref())?, etag))
}

impl EngineSink {
    /// Loads a state unless `only_first` and one was loaded already; `None` when skipped. A
    /// state without this client's credential is refused before the engine sees it: loaded,
    /// it would answer every evaluation "client secret not found".
    fn load(
        &self,
        state: &[u8],
        account: &str,
        log_destinations: &[i32],
        only_first: bool,
    ) -> Result<Option<Vec<String>>, ApplyError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        if only_first && applied.loads > 0 {
            return Ok(None);
        }
        let decoded = ResolverState::decode(state).map_err(|e| ApplyError::Decode(e.to_string()))?;
        if !has_credential(&decoded, &self.client_secret) {
            return Err(ApplyError::NoCredential);
        }
        let request = SetResolverStateRequest {
            state: state.to_vec(),
            account_id: account.to_string(),
            sdk: Some(self.sdk.clone()),
            enable_apply_dedup: self.enable_apply_dedup,
            disable_exposure_collection: self.disable_exposure_collection,
        };
        self.engine.load_state(&request)?;
        self.uploader.set_route(log_destinations, account);
        let next: HashMap<String, Vec<u8>> =
            decoded.flags.into_iter().map(|f| (f.name.clone(), f.encode_to_vec())).collect();
        let mut changed: Vec<String> = next
            .iter()
            .filter(|(name, bytes)| applied.flags.get(*name) != Some(*bytes))
            .map(|(name, _)| name.clone())
            .chain(applied.flags.keys().filter(|name| !next.contains_key(*name)).cloned())
            .collect();
        changed.sort();
        applied.flags = next;
        applied.loads += 1;
        Ok(Some(changed))
    }

    /// Saves a download that was just applied. A failed write costs only the fallback, so it
    /// is reported, not raised. Blocking file I/O: called from `apply`, on a blocking thread.
    fn save_snapshot(&self, update: &StateUpdate) {
        let Some(target) = &self.snapshot else { return };
        let snapshot = Snapshot { body: update.body.clone(), etag: update.etag.clone(), encrypted: target.encrypted };
        if let Err(e) = snapshot::write_atomic(&target.path, &snapshot::encode(&target.key, &snapshot)) {
            self.notices.push(Level::Warn, format!("cannot write the state snapshot {}: {e}", target.path.display()));
        }
    }
}

impl StateSink for EngineSink {
    fn apply(&self, update: &StateUpdate) -> Result<Vec<String>, ApplyError> {
        let changed = self.load(&update.state, &update.account, &update.log_destinations, false)?.unwrap_or_default();
        self.save_snapshot(update);
        Ok(changed)
    }
}

struct Tasks {
    stop: watch::Sender<bool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

pub struct ResolverHost {
    engine: Arc<dyn Engine>,
    uploader: Arc<LogUploader>,
    sink: Arc<EngineSink>,
    status: Arc<SyncStatus>,
    config: HostConfig,
    keys: Keys,
    notices: Arc<Notices>,
    tasks: Mutex<Option<Tasks>>,
    closed: std::sync::atomic::AtomicBool,
    /// Held through a close; `true` once one finished, so a second close waits for the first
    /// and then returns at once.
    closing: tokio::sync::Mutex<bool>,
}

impl ResolverHost {
    /// Validates the configuration and loads `initial_state` when given, so a host can answer
    /// before (or without) any network.
    pub fn new(engine: Arc<dyn Engine>, config: HostConfig) -> Result<Self, HostError> {
        config.sync.state_url()?;
        let api = reqwest::Url::parse(&config.upload.api_base_url).map_err(|e| HostError::ApiBaseUrl(e.to_string()))?;
        let client = http::client(&api, &config.sync.net).map_err(|e| match e {
            http::NetError::Insecure { .. } => HostError::ApiBaseUrl(e.to_string()),
            e => HostError::Net(e),
        })?;
        let notices = Arc::new(Notices::default());
        let uploader = Arc::new(LogUploader::new(client, config.upload.clone(), notices.clone())?);
        let keys = Keys {
            snapshot: SnapshotKey::new(&config.sync.client_secret),
            encryption: config.sync.encryption_key.clone(),
        };
        let snapshot = config.snapshot_path.clone().map(|path| SnapshotTarget {
            path,
            key: keys.snapshot.clone(),
            encrypted: keys.encryption.is_some(),
        });
        let sink = Arc::new(EngineSink {
            engine: engine.clone(),
            uploader: uploader.clone(),
            sdk: Sdk {
                sdk: Some(sdk::Sdk::Id(SdkId::JsLocalServerProvider as i32)),
                version: config.sdk_version.clone(),
            },
            enable_apply_dedup: config.enable_apply_dedup,
            disable_exposure_collection: config.disable_exposure_collection,
            applied: Mutex::new(Applied::default()),
            client_secret: config.sync.client_secret.clone(),
            snapshot,
            notices: notices.clone(),
        });
        let host = ResolverHost {
            engine,
            uploader,
            sink,
            status: Arc::new(SyncStatus::new()),
            config,
            keys,
            notices,
            tasks: Mutex::new(None),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: tokio::sync::Mutex::new(false),
        };
        if let Some(bytes) = host.config.initial_state.clone() {
            host.load_initial(&bytes)?;
        }
        Ok(host)
    }

    fn load_initial(&self, bytes: &[u8]) -> Result<(), HostError> {
        let (wrapper, etag) = open(bytes, &self.keys, false)?;
        let changed = self
            .sink
            .load(&wrapper.state, &wrapper.account, &wrapper.log_destinations, false)
            .map_err(OpenError::Apply)?
            .unwrap_or_default();
        self.status.record_applied(etag, changed);
        Ok(())
    }

    /// Serves the snapshot being read by `pending` when no state could be fetched in time;
    /// `false` when there is none to serve, it was not read by `deadline` (the end of the
    /// initialize timeout, `timeout`), a state arrived meanwhile, or the snapshot is unusable
    /// (with a warning: a corrupt, forged, truncated or foreign file is never trusted).
    async fn restore_snapshot(
        &self,
        pending: PendingRead,
        deadline: tokio::time::Instant,
        timeout: Duration,
        why: &FirstStateError,
    ) -> bool {
        let Some(path) = &self.config.snapshot_path else { return false };
        let ignore = |reason: String| {
            self.notices.push(Level::Warn, format!("ignoring the state snapshot {}: {reason}", path.display()));
            false
        };
        let bytes = match pending.until(deadline, timeout).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return false,
            Err(e) => return ignore(e.to_string()),
        };
        // Decrypting, decoding and loading take tens of milliseconds: off the workers as well.
        let sink = self.sink.clone();
        let keys = self.keys.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let (wrapper, etag) = open(&bytes, &keys, true)?;
            let changed = sink.load(&wrapper.state, &wrapper.account, &wrapper.log_destinations, true)?;
            Ok::<_, OpenError>(changed.map(|changed| (etag, changed)))
        })
        .await;
        match loaded {
            Ok(Ok(Some((etag, changed)))) => {
                self.status.record_restored(etag.clone(), changed);
                self.notices.push(
                    Level::Warn,
                    format!(
                        "serving the last-known-good state snapshot {} (ETag {}) because the CDN could not be reached: {why}; still polling the CDN",
                        path.display(),
                        etag.as_deref().unwrap_or("none")
                    ),
                );
                true
            }
            // A download was applied meanwhile: it is newer than any snapshot.
            Ok(Ok(None)) => true,
            Ok(Err(e)) => ignore(e.to_string()),
            Err(e) => ignore(format!("loading it failed: {e}")),
        }
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The engine while the host is open; after [`ResolverHost::close`] began, `NotReady`:
    /// a closed host evaluates nothing and logs nothing.
    pub fn open_engine(&self) -> Result<&Arc<dyn Engine>, EngineError> {
        match self.closed.load(std::sync::atomic::Ordering::Acquire) {
            false => Ok(&self.engine),
            true => Err(EngineError::Closed),
        }
    }

    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.status
    }

    pub fn uploader(&self) -> &Arc<LogUploader> {
        &self.uploader
    }

    /// Messages for the user's logger, oldest first.
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Starts the sync loop (unless offline) and the flush loop on the current runtime.
    pub fn start(&self) -> Result<(), HostError> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.is_some() {
            return Ok(());
        }
        let (stop, shutdown) = watch::channel(false);
        let mut handles = Vec::new();
        if !self.config.offline {
            let fetcher = StateFetcher::new(self.config.sync.clone())?;
            handles.push(tokio::spawn(run_sync_loop(
                fetcher,
                self.sink.clone(),
                self.config.state_update_interval,
                self.status.clone(),
                shutdown.clone(),
            )));
        }
        // Offline hosts drain too: logs wait in the bounded backlog (dropping oldest, counted)
        // instead of growing guest memory, and the test kit reads them from there.
        handles.push(tokio::spawn(flush_loop(
            self.engine.clone(),
            self.uploader.clone(),
            self.config.flush_interval,
            self.config.uploads(),
            shutdown,
        )));
        *tasks = Some(Tasks { stop, handles });
        Ok(())
    }

    /// Resolves when a state is in force; with none after `timeout` (or a failure retrying
    /// cannot fix), serves the snapshot if there is a usable one, else fails with the reason.
    /// The snapshot is read meanwhile on a blocking thread, and only until `timeout` runs out:
    /// a file that cannot be read in that time (a hung mount) counts as no snapshot.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), HostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let pending = match &self.config.snapshot_path {
            Some(path) if !self.status.has_state() => {
                Some(PendingRead::start(path.clone(), self.config.sync.max_state_bytes))
            }
            _ => None,
        };
        let why = match self.status.wait_for_first_state(timeout).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        let restored = match pending {
            Some(pending) => self.restore_snapshot(pending, deadline, timeout, &why).await,
            None => false,
        };
        if restored {
            Ok(())
        } else {
            Err(why.into())
        }
    }

    /// Drains the engine and uploads everything now (also with the flush loop running).
    pub async fn flush(&self) -> Result<usize, UploadError> {
        self.drain_engine().await;
        if !self.config.uploads() {
            return Ok(0);
        }
        self.uploader.flush().await
    }

    /// Everything logged so far that has not been uploaded, as serialized
    /// `WriteFlagLogsRequest`s, taken instead of uploaded (offline providers, the test kit).
    pub async fn take_logs(&self) -> Vec<bytes::Bytes> {
        self.drain_engine().await;
        self.uploader.take_backlog()
    }

    /// Moves everything the engine logged into the upload backlog (off the calling thread: a
    /// flush is a guest call).
    async fn drain_engine(&self) {
        let engine = self.engine.clone();
        let batches = tokio::task::spawn_blocking(move || engine.flush_logs()).await.unwrap_or_default();
        self.uploader.enqueue(batches);
    }

    /// Stops the loops, then a final drain and upload bounded by `timeout`. Idempotent.
    pub async fn close(&self, timeout: Duration) -> Result<usize, UploadError> {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        let mut closed = self.closing.lock().await;
        if *closed {
            return Ok(0);
        }
        *closed = true;
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tasks) = tasks {
            let _ = tasks.stop.send(true);
            for handle in tasks.handles {
                let _ = handle.await;
            }
        }
        let flushed = match tokio::time::timeout(timeout, self.flush()).await {
            Ok(result) => result,
            Err(_) => Err(UploadError::Timeout),
        };
        // From here on nothing leaves: uploads still running are aborted, and what they did
        // not deliver by the deadline is counted as dropped.
        self.uploader.close(self.config.uploads());
        let engine = self.engine.clone();
        let _ = tokio::task::spawn_blocking(move || engine.close()).await;
        flushed
    }
}

/// How often the flush loop looks for a full batch of exposures (~4 MiB) waiting in the
/// engine: a busy process uploads each one as soon as it fills instead of holding megabytes
/// until the next `interval` (which at ~100k evaluations/s would overflow the backlog).
const FULL_BATCH_CHECK: Duration = Duration::from_millis(100);

/// Every `interval`: recycle oversized instances, drain the engine, upload (when `upload`).
/// Between rounds, every full batch of exposures is drained and uploaded at once.
async fn flush_loop(
    engine: Arc<dyn Engine>,
    uploader: Arc<LogUploader>,
    interval: Duration,
    upload: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut full_batches = tokio::time::interval(FULL_BATCH_CHECK.min(interval));
    full_batches.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let round = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => true,
            _ = full_batches.tick() => false,
        };
        let e = engine.clone();
        let batches = tokio::task::spawn_blocking(move || {
            if round {
                e.maintain();
                e.flush_logs()
            } else {
                e.flush_assign()
            }
        })
        .await
        .unwrap_or_default();
        if !round && batches.is_empty() {
            continue;
        }
        uploader.enqueue(batches);
        if !upload {
            continue;
        }
        // A failed upload stays in the backlog for the next round; the stats record it.
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = uploader.flush() => {}
        }
    }
}
