//! Ties the pieces together for one provider: an engine, the CDN sync loop feeding it, and
//! the flush loop draining it into the log uploader. Knows nothing of JS; `lib.rs` wraps it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confidence_proto::admin::ClientResolverState;
use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::{sdk, Sdk, SdkId};
use prost::Message;
use tokio::sync::watch;

use crate::crypto::{decrypt_state, StateKey};
use crate::engine::{Engine, EngineError};
use crate::http;
use crate::log_upload::{LogUploader, UploadConfig, UploadError};
use crate::state_sync::{run_sync_loop, FirstStateError, StateFetcher, StateSink, StateUpdate, SyncConfig, SyncStatus};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("initial state: {0}")]
    InitialState(String),
    #[error(transparent)]
    NotReady(#[from] FirstStateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
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
    /// A `ClientResolverState` as the CDN serves it (encrypted when a key is configured).
    pub initial_state: Option<Vec<u8>>,
}

impl HostConfig {
    /// Whether logs are ever sent (not offline, uploads not disabled).
    pub fn uploads(&self) -> bool {
        !self.offline && !self.disable_log_upload
    }
}

/// Applies fetched states to the engine and keeps the uploader's route in step.
struct EngineSink {
    engine: Arc<dyn Engine>,
    uploader: Arc<LogUploader>,
    sdk: Sdk,
    enable_apply_dedup: bool,
    disable_exposure_collection: bool,
    /// Encoded flags of the state in force, to report which flags a swap changed.
    flags: Mutex<HashMap<String, Vec<u8>>>,
}

impl EngineSink {
    fn load(&self, state: &[u8], account: &str, log_destinations: &[i32]) -> Result<Vec<String>, String> {
        let request = SetResolverStateRequest {
            state: state.to_vec(),
            account_id: account.to_string(),
            sdk: Some(self.sdk.clone()),
            enable_apply_dedup: self.enable_apply_dedup,
            disable_exposure_collection: self.disable_exposure_collection,
        };
        self.engine.load_state(&request).map_err(|e| e.to_string())?;
        self.uploader.set_route(log_destinations, account);
        let next: HashMap<String, Vec<u8>> = ResolverState::decode(state)
            .map(|s| s.flags.into_iter().map(|f| (f.name.clone(), f.encode_to_vec())).collect())
            .unwrap_or_default();
        let mut current = self.flags.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed: Vec<String> = next
            .iter()
            .filter(|(name, bytes)| current.get(*name) != Some(*bytes))
            .map(|(name, _)| name.clone())
            .chain(current.keys().filter(|name| !next.contains_key(*name)).cloned())
            .collect();
        changed.sort();
        *current = next;
        Ok(changed)
    }
}

impl StateSink for EngineSink {
    fn apply(&self, update: &StateUpdate) -> Result<Vec<String>, String> {
        self.load(&update.state, &update.account, &update.log_destinations)
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
    tasks: Mutex<Option<Tasks>>,
}

impl ResolverHost {
    /// Validates the configuration and loads `initial_state` when given, so a host can answer
    /// before (or without) any network.
    pub fn new(engine: Arc<dyn Engine>, config: HostConfig) -> Result<Self, HostError> {
        config.sync.state_url().map_err(|e| HostError::Config(e.to_string()))?;
        let api = reqwest::Url::parse(&config.upload.api_base_url)
            .map_err(|e| HostError::Config(format!("invalid API base URL: {e}")))?;
        let client = http::client(&api, config.sync.connect_timeout).map_err(HostError::Config)?;
        let uploader =
            Arc::new(LogUploader::new(client, config.upload.clone()).map_err(|e| HostError::Config(e.to_string()))?);
        let sink = Arc::new(EngineSink {
            engine: engine.clone(),
            uploader: uploader.clone(),
            sdk: Sdk {
                sdk: Some(sdk::Sdk::Id(SdkId::JsLocalServerProvider as i32)),
                version: config.sdk_version.clone(),
            },
            enable_apply_dedup: config.enable_apply_dedup,
            disable_exposure_collection: config.disable_exposure_collection,
            flags: Mutex::new(HashMap::new()),
        });
        let host = ResolverHost {
            engine,
            uploader,
            sink,
            status: Arc::new(SyncStatus::new()),
            config,
            tasks: Mutex::new(None),
        };
        if let Some(bytes) = host.config.initial_state.clone() {
            host.load_initial(&bytes, host.config.sync.encryption_key.as_ref())?;
        }
        Ok(host)
    }

    fn load_initial(&self, bytes: &[u8], key: Option<&StateKey>) -> Result<(), HostError> {
        let plain = match key {
            Some(key) => decrypt_state(key, bytes).map_err(|e| HostError::InitialState(e.to_string()))?,
            None => bytes.to_vec(),
        };
        let wrapper = ClientResolverState::decode(plain.as_slice())
            .map_err(|e| HostError::InitialState(format!("not a ClientResolverState: {e}")))?;
        if wrapper.account.is_empty() {
            return Err(HostError::InitialState("the state names no account".into()));
        }
        let changed = self
            .sink
            .load(&wrapper.state, &wrapper.account, &wrapper.log_destinations)
            .map_err(HostError::InitialState)?;
        self.status.record_applied(None, changed);
        Ok(())
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    pub fn status(&self) -> &Arc<SyncStatus> {
        &self.status
    }

    pub fn uploader(&self) -> &Arc<LogUploader> {
        &self.uploader
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
            let fetcher = StateFetcher::new(self.config.sync.clone()).map_err(|e| HostError::Config(e.to_string()))?;
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

    /// Resolves when a state is in force; with none after `timeout`, the reason.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), HostError> {
        Ok(self.status.wait_for_first_state(timeout).await?)
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
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tasks) = tasks {
            let _ = tasks.stop.send(true);
            for handle in tasks.handles {
                let _ = handle.await;
            }
        }
        match tokio::time::timeout(timeout, self.flush()).await {
            Ok(result) => result,
            Err(_) => Err(UploadError::Timeout),
        }
    }
}

/// Every `interval`: recycle oversized instances, drain the engine, upload (when `upload`).
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
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let e = engine.clone();
        let batches = tokio::task::spawn_blocking(move || {
            e.maintain();
            e.flush_logs()
        })
        .await
        .unwrap_or_default();
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
