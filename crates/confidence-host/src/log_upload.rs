//! Ships the resolver's log batches to Confidence (docs/log-upload.md): destinations in priority
//! order, retries with backoff (honouring `Retry-After`), and a bounded in-memory backlog so
//! an outage shorter than the bound loses nothing. When the backlog is full the oldest batches
//! are dropped and counted: nothing is dropped silently.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;

use crate::http::{self, Backoff, PostError, RetryPolicy};

pub const DEFAULT_API_BASE_URL: &str = "https://resolver.confidence.dev";
pub const DEFAULT_CLOUDFLARE_BASE_URL: &str = "https://epx-flags-logs.experimentation-platform.workers.dev";
/// Backlog bound: ~8 full 4 MiB batches, minutes of heavy traffic.
pub const DEFAULT_BACKLOG_BYTES: usize = 32 << 20;

const EDGE_PATH: &str = "/v1/clientFlagLogs:write";
const CLOUDFLARE_PATH: &str = "/v1/flagLogs:ingest";
/// `LogDestination` values of the state (docs/wire-format.md, "Resolver state").
const DESTINATION_CLOUDFLARE: i32 = 2;
/// A server asking for a longer pause than this gets it at the next flush instead.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub api_base_url: String,
    pub cloudflare_base_url: String,
    pub client_secret: String,
    /// Bound of one attempt (docs/log-upload.md: 5 s).
    pub request_timeout: Duration,
    /// Attempts per destination (docs/log-upload.md: 3, from 500 ms doubling).
    pub max_attempts: u32,
    pub backlog_bytes: usize,
}

impl UploadConfig {
    pub fn new(client_secret: impl Into<String>) -> Self {
        UploadConfig {
            api_base_url: DEFAULT_API_BASE_URL.into(),
            cloudflare_base_url: DEFAULT_CLOUDFLARE_BASE_URL.into(),
            client_secret: client_secret.into(),
            request_timeout: Duration::from_secs(5),
            max_attempts: 3,
            backlog_bytes: DEFAULT_BACKLOG_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("log upload failed: HTTP {0}")]
    Http(u16),
    #[error("log upload failed: {0}")]
    Network(String),
    #[error("log upload failed: the request timed out")]
    Timeout,
}

impl From<PostError> for UploadError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::Http(status) => UploadError::Http(status),
            PostError::Network(reason) => UploadError::Network(reason),
            PostError::Timeout => UploadError::Timeout,
        }
    }
}

/// Upload counters, readable from any thread.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Batches handed over by the engine: every one ends up sent, dropped or still queued.
    pub batches_enqueued: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub dropped_bytes: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    Edge,
    Cloudflare,
}

/// Batches waiting for upload, each with a sequence number so a flush can tell whether the
/// batch it just sent is still at the front (the bound may have dropped it meanwhile).
struct Backlog {
    batches: VecDeque<(u64, Bytes)>,
    bytes: usize,
    next_id: u64,
}

struct Route {
    destinations: Vec<Destination>,
    account: String,
}

/// Ships log batches. Its state is shared (`Arc`) with uploads still in flight, see `flush`;
/// everything but `flush` is the [`Uploader`]'s.
pub struct LogUploader(Arc<Uploader>);

/// The uploader's state and its non-async operations.
pub struct Uploader {
    client: reqwest::Client,
    config: UploadConfig,
    auth: HeaderValue,
    backlog: Mutex<Backlog>,
    route: Mutex<Route>,
    /// One flush at a time, so batches leave in the order they were produced.
    sending: tokio::sync::Mutex<()>,
    pub stats: UploadStats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `IngestFlagLogsRequest{account_id = 1, batch = 2}` built around the guest's bytes without
/// decoding them (docs/wire-format.md, "Log upload messages").
fn ingest_body(account: &str, batch: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() + account.len() + 12);
    for (tag, bytes) in [(0x0a_u8, account.as_bytes()), (0x12, batch)] {
        out.push(tag);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
    }
    out
}

impl Deref for LogUploader {
    type Target = Uploader;

    fn deref(&self) -> &Uploader {
        &self.0
    }
}

impl LogUploader {
    pub fn new(client: reqwest::Client, config: UploadConfig) -> Result<Self, UploadError> {
        let auth = HeaderValue::from_str(&format!("ClientSecret {}", config.client_secret))
            .map_err(|_| UploadError::Network("the client secret is not a valid header value".into()))?;
        Ok(LogUploader(Arc::new(Uploader {
            client,
            config,
            auth,
            backlog: Mutex::new(Backlog { batches: VecDeque::new(), bytes: 0, next_id: 0 }),
            route: Mutex::new(Route { destinations: vec![Destination::Edge], account: String::new() }),
            sending: tokio::sync::Mutex::new(()),
            stats: UploadStats::default(),
        })))
    }

    /// Sends the backlog in order. Stops at the first batch no destination accepts (it stays
    /// queued with everything after it) and returns that error; the next flush resumes there.
    ///
    /// The sending runs as a task of its own: a caller that stops waiting (a shutdown, a
    /// timeout) does not cancel a request the server may already have accepted, which would
    /// leave its batch queued and sent again by the next flush. That flush waits for this one
    /// instead, and the batch leaves once.
    pub async fn flush(&self) -> Result<usize, UploadError> {
        let uploader = self.0.clone();
        let sending = async move { uploader.send_backlog().await };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn(sending)
                .await
                .unwrap_or_else(|e| Err(UploadError::Network(format!("the upload task failed: {e}")))),
            Err(_) => sending.await,
        }
    }
}

impl Uploader {
    /// Destinations come with each state (`ClientResolverState.log_destinations`); empty or
    /// unknown values mean Spotify's edge.
    pub fn set_route(&self, log_destinations: &[i32], account: &str) {
        let mut destinations: Vec<Destination> = log_destinations
            .iter()
            .map(|d| if *d == DESTINATION_CLOUDFLARE { Destination::Cloudflare } else { Destination::Edge })
            .collect();
        destinations.dedup();
        if destinations.is_empty() {
            destinations.push(Destination::Edge);
        }
        *lock(&self.route) = Route { destinations, account: account.to_string() };
    }

    /// Queues batches for the next `flush`, dropping the oldest (counted) beyond the bound.
    pub fn enqueue(&self, batches: impl IntoIterator<Item = Vec<u8>>) {
        let mut backlog = lock(&self.backlog);
        for batch in batches {
            self.stats.batches_enqueued.fetch_add(1, Ordering::Relaxed);
            backlog.bytes += batch.len();
            let id = backlog.next_id;
            backlog.next_id += 1;
            backlog.batches.push_back((id, Bytes::from(batch)));
        }
        while backlog.bytes > self.config.backlog_bytes && backlog.batches.len() > 1 {
            if let Some((_, old)) = backlog.batches.pop_front() {
                backlog.bytes -= old.len();
                self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_bytes.fetch_add(old.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Hands the whole backlog to the caller instead of uploading it (offline providers and the
    /// test kit read what would have been sent).
    pub fn take_backlog(&self) -> Vec<Bytes> {
        let mut backlog = lock(&self.backlog);
        backlog.bytes = 0;
        backlog.batches.drain(..).map(|(_, batch)| batch).collect()
    }

    pub fn backlog_len(&self) -> usize {
        lock(&self.backlog).batches.len()
    }

    /// `LogUploader::flush`, in whichever task runs it.
    async fn send_backlog(&self) -> Result<usize, UploadError> {
        let _one_at_a_time = self.sending.lock().await;
        let mut sent = 0;
        loop {
            let Some((id, batch)) = lock(&self.backlog).batches.front().cloned() else { return Ok(sent) };
            self.send(&batch).await?;
            let mut backlog = lock(&self.backlog);
            if backlog.batches.front().is_some_and(|(front, _)| *front == id) {
                backlog.batches.pop_front();
                backlog.bytes -= batch.len();
            } else {
                // The bound dropped this batch while it was in flight, and it arrived after all:
                // it counts as sent, not dropped (enqueued = sent + dropped + queued holds).
                self.stats.dropped_batches.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped_bytes.fetch_sub(batch.len() as u64, Ordering::Relaxed);
            }
            drop(backlog);
            self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            sent += 1;
        }
    }

    /// One batch: each destination in priority order, each with retries.
    async fn send(&self, batch: &Bytes) -> Result<(), UploadError> {
        let (destinations, account) = {
            let route = lock(&self.route);
            (route.destinations.clone(), route.account.clone())
        };
        let mut last = UploadError::Network("no log destination".into());
        for destination in destinations {
            let (url, body) = match destination {
                Destination::Edge => {
                    (format!("{}{EDGE_PATH}", self.config.api_base_url.trim_end_matches('/')), batch.clone())
                }
                Destination::Cloudflare => (
                    format!("{}{CLOUDFLARE_PATH}", self.config.cloudflare_base_url.trim_end_matches('/')),
                    Bytes::from(ingest_body(&account, batch)),
                ),
            };
            match self.post_with_retries(&url, body).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `body` is reference-counted: retries and destinations share one copy of the batch.
    async fn post_with_retries(&self, url: &str, body: Bytes) -> Result<(), UploadError> {
        let policy = RetryPolicy {
            attempts: self.config.max_attempts,
            base_delay: Backoff::BASE,
            max_delay: MAX_RETRY_DELAY,
            timeout: self.config.request_timeout,
        };
        let failed = || {
            self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        };
        http::post_protobuf(&self.client, url, &self.auth, body, &policy, failed).await.map(drop).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_body_wraps_the_batch_without_decoding_it() {
        let body = ingest_body("acct", &[0x0a, 0x00]);
        assert_eq!(body, [0x0a, 4, b'a', b'c', b'c', b't', 0x12, 2, 0x0a, 0x00]);
    }

    #[test]
    fn the_backlog_drops_the_oldest_and_counts_it() {
        let mut config = UploadConfig::new("s");
        config.backlog_bytes = 10;
        crate::crypto::install_tls_provider();
        let up = LogUploader::new(reqwest::Client::new(), config).unwrap();
        up.enqueue([vec![1; 4], vec![2; 4], vec![3; 4]]);
        assert_eq!(up.backlog_len(), 2);
        assert_eq!(up.stats.batches_enqueued.load(Ordering::Relaxed), 3);
        assert_eq!(up.stats.dropped_batches.load(Ordering::Relaxed), 1);
        assert_eq!(up.stats.dropped_bytes.load(Ordering::Relaxed), 4);
    }
}
