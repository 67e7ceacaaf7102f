//! Keeping the resolver state fresh from Confidence's CDN (docs/state-cdn.md): one conditional GET per
//! poll, decrypt, decode the `ClientResolverState`, hand it to a [`StateSink`], back off on
//! failures. Knows nothing of wasm, JS or the engine: the sink decides what "applied" means.
//!
//! Waiting for the first state: spawn [`run_sync_loop`] (or [`spawn_sync_loop`]) and await
//! [`SyncStatus::wait_for_first_state`] with the initialize timeout. It resolves as soon as a
//! state is applied, fails early on a failure that retrying cannot fix (bad key, 404, rejected
//! state, …) and otherwise reports the last error at the timeout. The loop keeps polling either
//! way, so a provider whose initialization failed still becomes ready once a state loads.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use confidence_proto::admin::ClientResolverState;
use prost::Message;
use reqwest::header::{CONTENT_LENGTH, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio::sync::watch;

use crate::crypto::{self, CryptoError, StateKey};
use crate::engine::EngineError;
use crate::http::{self, error_chain, is_loopback, parse_retry_after, Backoff, Jitter, NetConfig, NetError};

/// Confidence's production CDN.
pub const DEFAULT_CDN_BASE_URL: &str = "https://confidence-resolver-state-cdn.spotifycdn.com/";
/// Bound on one whole request (connect, headers and body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body accepted; real states are a few MiB at most.
pub const DEFAULT_MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Configuration

/// Where and how to fetch the state. Validated once by [`StateFetcher::new`]; `Debug` hides
/// the secret and the key.
#[derive(Clone)]
pub struct SyncConfig {
    /// Base URL the state path is appended to. `https`, or plain `http` for loopback hosts only.
    pub cdn_base_url: String,
    /// The flag client secret; its SHA-256 names the state on the CDN.
    pub client_secret: String,
    /// When set, the encrypted state (`.enc`) is fetched and decrypted with this key.
    pub encryption_key: Option<StateKey>,
    /// Bound on one whole request, body included.
    pub request_timeout: Duration,
    /// Timeouts, proxies and trust roots (shared with the host's other clients).
    pub net: NetConfig,
    /// Bodies larger than this are rejected without buffering them.
    pub max_state_bytes: usize,
}

impl SyncConfig {
    /// Production defaults for `client_secret`.
    pub fn new(client_secret: impl Into<String>) -> Self {
        SyncConfig {
            cdn_base_url: DEFAULT_CDN_BASE_URL.to_string(),
            client_secret: client_secret.into(),
            encryption_key: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            net: NetConfig::default(),
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
        }
    }

    /// The full state URL (base + digest [+ `.enc`]), after validating the configuration.
    pub fn state_url(&self) -> Result<Url, ConfigError> {
        if self.client_secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        if self.max_state_bytes == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        let mut base =
            Url::parse(&self.cdn_base_url).map_err(|e| ConfigError::InvalidBaseUrl { reason: e.to_string() })?;
        if base.cannot_be_a_base() {
            return Err(ConfigError::InvalidBaseUrl { reason: "not a hierarchical URL".into() });
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ConfigError::InvalidBaseUrl { reason: "must not have a query or fragment".into() });
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ConfigError::InvalidBaseUrl { reason: "must not contain credentials".into() });
        }
        match base.scheme() {
            "https" => {}
            "http" if is_loopback(&base) => {}
            "http" => {
                return Err(ConfigError::InsecureBaseUrl { host: base.host_str().unwrap_or_default().to_string() })
            }
            other => return Err(ConfigError::UnsupportedScheme { scheme: other.to_string() }),
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.join(&crypto::state_path(&self.client_secret, self.encryption_key.is_some()))
            .map_err(|e| ConfigError::InvalidBaseUrl { reason: e.to_string() })
    }
}

impl fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncConfig")
            .field("cdn_base_url", &self.cdn_base_url)
            .field("client_secret", &"<redacted>")
            .field("encryption_key", &self.encryption_key)
            .field("request_timeout", &self.request_timeout)
            .field("net", &self.net)
            .field("max_state_bytes", &self.max_state_bytes)
            .finish()
    }
}

/// A configuration that can never work; reported when the fetcher is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the client secret is empty")]
    EmptySecret,
    #[error("invalid CDN base URL: {reason}")]
    InvalidBaseUrl { reason: String },
    #[error("CDN base URL must use https (plain http is allowed only for loopback hosts, not {host:?})")]
    InsecureBaseUrl { host: String },
    #[error("CDN base URL has unsupported scheme {scheme:?} (expected https)")]
    UnsupportedScheme { scheme: String },
    #[error("timeouts must be greater than zero")]
    ZeroTimeout,
    #[error("max_state_bytes must be greater than zero")]
    ZeroLimit,
    #[error(transparent)]
    Net(#[from] NetError),
}

// ---------------------------------------------------------------------------------------------
// One fetch

/// A new state from the CDN, not yet applied.
#[derive(Clone, PartialEq, Eq)]
pub struct StateUpdate {
    /// The serialized `ResolverState`, handed to the resolver verbatim.
    pub state: Vec<u8>,
    /// Account id for the resolver and the Cloudflare log destination; never empty.
    pub account: String,
    /// `ClientResolverState.log_destinations`, in priority order (empty = Spotify edge).
    pub log_destinations: Vec<i32>,
    /// The response's `ETag`; pass it to [`StateFetcher::commit`] once the state is applied.
    pub etag: Option<String>,
    /// The body exactly as downloaded (encrypted when a key is set), for on-disk snapshots.
    pub body: Vec<u8>,
}

impl fmt::Debug for StateUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateUpdate")
            .field("state_bytes", &self.state.len())
            .field("account", &self.account)
            .field("log_destinations", &self.log_destinations)
            .field("etag", &self.etag)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Outcome of one successful conditional GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// `304`: the committed state is still current.
    NotModified,
    /// `200` with a valid payload.
    State(StateUpdate),
}

/// Why a fetch (or applying its result) failed. Messages never contain the secret or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("network error fetching state: {0}")]
    Network(String),
    /// Which bound ran out: connect, read or the whole request.
    #[error("timed out fetching state ({0})")]
    Timeout(String),
    #[error("failed to fetch state: HTTP {status}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Http { status: u16, retry_after: Option<Duration> },
    #[error("state body is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("state body incomplete: {0}")]
    Body(String),
    #[error(transparent)]
    Decrypt(#[from] CryptoError),
    #[error("cannot decode state: {0}")]
    Decode(String),
    #[error("state has an empty account id")]
    EmptyAccount,
    /// Loading it would answer every evaluation "client secret not found".
    #[error("the state has no credential for this client secret")]
    NoCredential,
    #[error("state rejected by the resolver: {0}")]
    Rejected(String),
}

impl From<ApplyError> for SyncError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::NoCredential => SyncError::NoCredential,
            ApplyError::Decode(reason) => SyncError::Decode(reason),
            ApplyError::Engine(e) => SyncError::Rejected(e.to_string()),
        }
    }
}

impl SyncError {
    /// Whether retrying soon may help (network trouble, timeouts, 408, 429, 5xx, a cut body).
    /// Everything else waits for the next regular poll.
    pub fn is_retryable(&self) -> bool {
        match self {
            SyncError::Network(_) | SyncError::Timeout(_) | SyncError::Body(_) => true,
            SyncError::Http { status, .. } => matches!(*status, 408 | 429) || *status >= 500,
            _ => false,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SyncError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Fetches the state with conditional GETs. Holds the HTTP client (connection reuse) and the
/// ETag of the last state the caller confirmed as applied.
pub struct StateFetcher {
    client: reqwest::Client,
    url: Url,
    key: Option<StateKey>,
    request_timeout: Duration,
    net: NetConfig,
    max_state_bytes: usize,
    etag: Option<String>,
}

impl fmt::Debug for StateFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFetcher").field("url", &self.url.as_str()).field("etag", &self.etag).finish()
    }
}

impl StateFetcher {
    /// Validates `config` and builds the HTTP client.
    pub fn new(config: SyncConfig) -> Result<Self, ConfigError> {
        let url = config.state_url()?;
        let client = http::client(&url, &config.net)?;
        Ok(StateFetcher {
            client,
            url,
            key: config.encryption_key,
            request_timeout: config.request_timeout,
            net: config.net,
            max_state_bytes: config.max_state_bytes,
            etag: None,
        })
    }

    /// The state URL (contains the secret's digest, never the secret).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The ETag sent as `If-None-Match`: that of the last committed state.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Records that the update carrying `etag` was applied, so later polls are conditional on
    /// it. Not calling this (the state was rejected) makes the next poll download it again.
    pub fn commit(&mut self, etag: Option<String>) {
        self.etag = etag;
    }

    /// One conditional GET: `304` → [`Fetched::NotModified`]; `200` → the decrypted, decoded,
    /// validated state. Never yields a partially received state.
    pub async fn fetch(&self) -> Result<Fetched, SyncError> {
        let mut request = self.client.get(self.url.clone()).timeout(self.request_timeout);
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(|e| self.classify(e))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            status => {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                return Err(SyncError::Http { status: status.as_u16(), retry_after });
            }
        }
        let etag = response.headers().get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_state_bytes as u64) {
            return Err(SyncError::TooLarge { limit: self.max_state_bytes });
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > self.max_state_bytes {
                return Err(SyncError::TooLarge { limit: self.max_state_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        // hyper already fails a body that ends early; this guards any path that would not.
        if let Some(len) = declared.filter(|len| *len != body.len() as u64) {
            return Err(SyncError::Body(format!("received {} of {len} bytes", body.len())));
        }
        let decoded = decode_body(&body, self.key.as_ref())?;
        Ok(Fetched::State(StateUpdate {
            state: decoded.state,
            account: decoded.account,
            log_destinations: decoded.log_destinations,
            etag,
            body,
        }))
    }

    fn classify(&self, error: reqwest::Error) -> SyncError {
        if error.is_timeout() {
            let limits = if error.is_connect() {
                format!("connect limit {:?}", self.net.connect_timeout)
            } else {
                match self.net.read_timeout {
                    Some(read) => format!("read limit {read:?}, request limit {:?}", self.request_timeout),
                    None => format!("request limit {:?}", self.request_timeout),
                }
            };
            SyncError::Timeout(limits)
        } else if error.is_body() || error.is_decode() {
            SyncError::Body(error_chain(&error.without_url()))
        } else {
            SyncError::Network(error_chain(&error.without_url()))
        }
    }
}

/// A CDN body (encrypted when `key` is set) as the wrapper it carries, checked to name an
/// account. The one decoder for downloads, initial states and snapshots.
pub fn decode_body(body: &[u8], key: Option<&StateKey>) -> Result<ClientResolverState, SyncError> {
    let plain = match key {
        Some(key) => Cow::Owned(crypto::decrypt_state(key, body)?),
        None => Cow::Borrowed(body),
    };
    let decoded = ClientResolverState::decode(plain.as_ref()).map_err(|e| SyncError::Decode(e.to_string()))?;
    if decoded.account.is_empty() {
        return Err(SyncError::EmptyAccount);
    }
    Ok(decoded)
}

// ---------------------------------------------------------------------------------------------
// Status

/// What the sync loop has been doing, readable from any thread: counters are atomics, the rest
/// sits behind a mutex held only to copy a few fields.
#[derive(Debug)]
pub struct SyncStatus {
    fetches: AtomicU64,
    updates: AtomicU64,
    not_modified: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    detail: Mutex<Detail>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Default)]
struct Detail {
    last_success: Option<SystemTime>,
    etag: Option<String>,
    last_error: Option<String>,
    changed_flags: Vec<String>,
    /// The state in force came from a snapshot and the CDN has not confirmed it since.
    from_snapshot: bool,
    /// Flags changed by every swap since the last [`SyncStatus::take_changed_flags`]; `None`
    /// when no swap happened. Accumulated so a reader polling slower than the swaps loses none.
    unreported_changes: Option<BTreeSet<String>>,
}

/// A copy of everything in [`SyncStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncSnapshot {
    /// GET requests started.
    pub fetches: u64,
    /// States applied.
    pub updates: u64,
    /// `304` answers.
    pub not_modified: u64,
    /// Failed fetches plus rejected states.
    pub failures: u64,
    /// Failures since the last success (`0` = healthy).
    pub consecutive_failures: u64,
    /// When the CDN last answered usefully (`200` applied or `304`).
    pub last_success: Option<SystemTime>,
    /// ETag of the applied state.
    pub etag: Option<String>,
    /// The most recent failure, kept after recovery (see `consecutive_failures`).
    pub last_error: Option<String>,
    /// Flags that changed in the last applied update.
    pub changed_flags: Vec<String>,
    /// The state in force was restored from a snapshot and not yet confirmed by the CDN.
    pub from_snapshot: bool,
}

/// The loop's progress as a `watch` value, for waiting without polling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// States applied so far.
    pub applied: u64,
    /// The most recent failure, cleared by a success.
    pub last_failure: Option<Failure>,
    /// The loop has returned.
    pub stopped: bool,
}

/// A failure as recorded in [`Progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Whether the loop retries it soon (see [`SyncError::is_retryable`]).
    pub retryable: bool,
}

/// Why [`SyncStatus::wait_for_first_state`] gave up. The loop keeps running in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirstStateError {
    #[error("no resolver state after {waited:?}{}", last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    TimedOut { waited: Duration, last_error: Option<String> },
    /// A failure retrying will not fix soon (404, bad key, undecodable or rejected state).
    #[error("{0}")]
    Failed(String),
    #[error("state sync stopped before a state was loaded")]
    Stopped,
}

impl Default for SyncStatus {
    fn default() -> Self {
        SyncStatus {
            fetches: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU64::new(0),
            detail: Mutex::new(Detail::default()),
            progress: watch::Sender::new(Progress::default()),
        }
    }
}

impl SyncStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// A consistent-enough copy of all fields (counters are read individually).
    pub fn snapshot(&self) -> SyncSnapshot {
        let detail = self.detail();
        SyncSnapshot {
            fetches: self.fetches.load(Ordering::Relaxed),
            updates: self.updates.load(Ordering::Relaxed),
            not_modified: self.not_modified.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_success: detail.last_success,
            etag: detail.etag.clone(),
            last_error: detail.last_error.clone(),
            changed_flags: detail.changed_flags.clone(),
            from_snapshot: detail.from_snapshot,
        }
    }

    pub fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether any state has been applied.
    pub fn has_state(&self) -> bool {
        self.updates() > 0
    }

    pub fn last_error(&self) -> Option<String> {
        self.detail().last_error.clone()
    }

    /// ETag of the state in force, whoever applied it (the loop, an initial state, a snapshot).
    pub fn etag(&self) -> Option<String> {
        self.detail().etag.clone()
    }

    /// A GET was started.
    pub fn record_fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }

    /// The CDN answered `304`.
    pub fn record_not_modified(&self) {
        self.not_modified.fetch_add(1, Ordering::Relaxed);
        self.record_success();
    }

    /// A state was applied; `changed_flags` as reported by the sink.
    pub fn record_applied(&self, etag: Option<String>, changed_flags: Vec<String>) {
        self.record_in_force(etag, changed_flags, false);
        self.record_success();
    }

    /// A state was restored from a snapshot because the CDN could not be reached: in force, but
    /// not a success of the CDN (`last_success` and the failure counters are left alone).
    pub fn record_restored(&self, etag: Option<String>, changed_flags: Vec<String>) {
        self.record_in_force(etag, changed_flags, true);
    }

    fn record_in_force(&self, etag: Option<String>, changed_flags: Vec<String>, from_snapshot: bool) {
        {
            let mut detail = self.detail();
            detail.etag = etag;
            detail.from_snapshot = from_snapshot;
            detail.unreported_changes.get_or_insert_with(BTreeSet::new).extend(changed_flags.iter().cloned());
            detail.changed_flags = changed_flags;
        }
        self.updates.fetch_add(1, Ordering::Relaxed);
        self.progress.send_modify(|p| p.applied += 1);
    }

    /// The flags changed by all swaps since the previous call (sorted, deduplicated), or `None`
    /// when there was no swap: what a provider turns into CONFIGURATION_CHANGED events.
    pub fn take_changed_flags(&self) -> Option<Vec<String>> {
        self.detail().unreported_changes.take().map(|set| set.into_iter().collect())
    }

    /// A fetch failed or its state was rejected.
    pub fn record_failure(&self, error: &SyncError) {
        let message = error.to_string();
        self.detail().last_error = Some(message.clone());
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        let failure = Failure { message, retryable: error.is_retryable() };
        self.progress.send_modify(|p| p.last_failure = Some(failure));
    }

    fn record_success(&self) {
        {
            let mut detail = self.detail();
            detail.last_success = Some(SystemTime::now());
            detail.from_snapshot = false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.progress.send_if_modified(|p| p.last_failure.take().is_some());
    }

    fn record_stopped(&self) {
        self.progress.send_modify(|p| p.stopped = true);
    }

    /// Waits until a state has been applied (immediately if one already was). Fails at once
    /// when the latest outcome is a failure that is not retried soon (404, bad key, bad or
    /// rejected state; also one recorded before the call), else at `timeout` with the last
    /// error. Either way the loop keeps polling and a later success still applies.
    pub async fn wait_for_first_state(&self, timeout: Duration) -> Result<(), FirstStateError> {
        let mut progress = self.progress.subscribe();
        let wait = async {
            loop {
                {
                    let p = progress.borrow_and_update();
                    if p.applied > 0 {
                        return Ok(());
                    }
                    if let Some(failure) = p.last_failure.as_ref().filter(|f| !f.retryable) {
                        return Err(FirstStateError::Failed(failure.message.clone()));
                    }
                    if p.stopped {
                        return Err(FirstStateError::Stopped);
                    }
                }
                if progress.changed().await.is_err() {
                    return Err(FirstStateError::Stopped);
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(FirstStateError::TimedOut { waited: timeout, last_error: self.last_error() }),
        }
    }

    /// The mutex only guards plain data, so a panic elsewhere cannot leave it inconsistent.
    fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ---------------------------------------------------------------------------------------------
// The loop

/// Why a sink refused a state; the state in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The state holds no credential for the sink's client secret.
    #[error("the state has no credential for this client secret")]
    NoCredential,
    /// The wrapper's `state` is not a `ResolverState`.
    #[error("cannot decode the resolver state: {0}")]
    Decode(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where fetched states go (the engine, in the addon).
pub trait StateSink: Send + Sync {
    /// Applies `update` and returns the names of flags that changed, or why it was rejected
    /// (the previous state must then stay in force). Runs on a blocking thread: it may take a
    /// few tens of milliseconds (and may do file I/O).
    fn apply(&self, update: &StateUpdate) -> Result<Vec<String>, ApplyError>;
}

impl<S: StateSink + ?Sized> StateSink for Arc<S> {
    fn apply(&self, update: &StateUpdate) -> Result<Vec<String>, ApplyError> {
        (**self).apply(update)
    }
}

/// Shortest poll interval the loop accepts; smaller values are raised to it.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Resolves once `shutdown` holds `true` or its sender is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Polls the CDN until `shutdown`: fetches at once, then every `interval` ± 10 %. A retryable
/// failure (network, timeout, 408/429/5xx, cut body) is retried with [`Backoff`] capped at
/// `interval`, forever, until a fetch succeeds; other failures (404, decrypt/decode errors,
/// empty account, a state the sink rejects) wait for the next regular poll. A rejected state's
/// ETag is not committed, so it is downloaded again then. Returns within a few milliseconds of
/// `shutdown` (or its sender being dropped), even mid-request, mid-apply or mid-sleep; an
/// apply already running finishes on its blocking thread.
pub async fn run_sync_loop<S: StateSink + 'static>(
    mut fetcher: StateFetcher,
    sink: S,
    interval: Duration,
    status: Arc<SyncStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    /// Marks the status stopped however the loop ends (return, or the task being dropped).
    struct StopGuard(Arc<SyncStatus>);
    impl Drop for StopGuard {
        fn drop(&mut self) {
            self.0.record_stopped();
        }
    }
    let _guard = StopGuard(status.clone());
    // A zero interval would hammer the CDN; hosts validate their own (much larger) minimum.
    let interval = interval.max(MIN_INTERVAL);
    let sink = Arc::new(sink);
    let mut backoff = Backoff::new(interval);
    let mut jitter = Jitter::random();
    let mut attempt: u32 = 0;

    while !*shutdown.borrow() {
        // `If-None-Match` names the state in force, also when the loop did not apply it (an
        // initial state or a snapshot restored while the CDN was unreachable).
        fetcher.commit(status.etag());
        status.record_fetch();
        let fetched = tokio::select! {
            biased;
            _ = shutdown_requested(&mut shutdown) => return,
            fetched = fetcher.fetch() => fetched,
        };
        let outcome = match fetched {
            Ok(Fetched::NotModified) => {
                status.record_not_modified();
                Ok(())
            }
            Ok(Fetched::State(update)) => {
                let applying = tokio::task::spawn_blocking({
                    let sink = sink.clone();
                    move || {
                        let result = sink.apply(&update);
                        (update.etag, result)
                    }
                });
                let joined = tokio::select! {
                    biased;
                    _ = shutdown_requested(&mut shutdown) => return,
                    joined = applying => joined,
                };
                match joined {
                    Ok((etag, Ok(changed))) => {
                        fetcher.commit(etag.clone());
                        status.record_applied(etag, changed);
                        Ok(())
                    }
                    Ok((_, Err(reason))) => Err(reason.into()),
                    Err(_) => Err(SyncError::Rejected("the state sink panicked".into())),
                }
            }
            Err(error) => Err(error),
        };
        let pause = match outcome {
            Ok(()) => {
                attempt = 0;
                jitter.apply(interval)
            }
            Err(error) => {
                status.record_failure(&error);
                if error.is_retryable() {
                    let pause = backoff.delay(attempt, error.retry_after());
                    attempt = attempt.saturating_add(1);
                    pause
                } else {
                    attempt = 0;
                    jitter.apply(interval)
                }
            }
        };
        tokio::select! {
            biased;
            _ = shutdown_requested(&mut shutdown) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A running sync loop: its status and the means to stop it.
#[derive(Debug)]
pub struct SyncHandle {
    pub status: Arc<SyncStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SyncHandle {
    /// Signals the loop and waits for it to return (promptly; see [`run_sync_loop`]).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Spawns [`run_sync_loop`] on the current tokio runtime. Await
/// `handle.status.wait_for_first_state(timeout)` to initialize.
///
/// # Panics
/// When called outside a tokio runtime (like `tokio::spawn`).
pub fn spawn_sync_loop<S: StateSink + 'static>(fetcher: StateFetcher, sink: S, interval: Duration) -> SyncHandle {
    let status = Arc::new(SyncStatus::new());
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_sync_loop(fetcher, sink, interval, status.clone(), shutdown));
    SyncHandle { status, stop, task }
}
