//! Ships the resolver's log batches to Confidence (docs/log-upload.md): destinations in priority
//! order, retries with backoff (honouring `Retry-After`), and a bounded in-memory backlog so
//! an outage shorter than the bound loses nothing. When the backlog is full the oldest batches
//! are dropped and counted: nothing is dropped silently.
//!
//! Every batch is accounted for: `enqueued = sent + dropped + rejected + queued` holds whenever
//! the counters are read ([`Uploader::stats`] reads them under the backlog's lock). A batch the
//! server finds too large (413) is split in halves and retried; one it refuses as malformed
//! (400, 422) is rejected, counted and reported once, and the queue moves on behind it.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderValue;

use confidence_resolver::proto::confidence::flags::resolver::v1::WriteFlagLogsRequest;
use prost::Message;

use crate::http::{self, Backoff, PostError, RetryPolicy};
use crate::notices::{Level, Notices};

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
    #[error("the client secret is not a valid header value")]
    Secret,
    #[error("the log uploader is closed")]
    Closed,
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

/// Upload counters, as one consistent reading ([`Uploader::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Batches handed over by the engine, plus one for each split: every one ends up sent,
    /// dropped, rejected or still queued.
    pub batches_enqueued: u64,
    /// Accepted by Confidence, or handed to the caller of [`Uploader::take_backlog`].
    pub batches_sent: u64,
    pub bytes_sent: u64,
    /// Dropped by the backlog bound, or still undelivered when the uploader closed.
    pub dropped_batches: u64,
    pub dropped_bytes: u64,
    /// Refused by the server as malformed (400, 422), or too large (413) as a single entry.
    pub rejected_batches: u64,
    /// Batches split in halves after a 413.
    pub split_batches: u64,
    pub queued_batches: u64,
    pub failed_attempts: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Destination {
    Edge,
    Cloudflare,
}

/// Batches waiting for upload, oldest first, and the counters that account for them (under
/// one lock, so they always add up).
struct Backlog {
    batches: VecDeque<Queued>,
    bytes: usize,
    next_id: u64,
    stats: UploadStats,
    /// Set by [`Uploader::close`]: nothing leaves any more.
    closed: bool,
}

struct Queued {
    id: u64,
    batch: Bytes,
    /// Being uploaded: the bound and the test kit leave it alone until it settles.
    in_flight: bool,
}

impl Backlog {
    fn push(&mut self, batch: Bytes) {
        self.bytes += batch.len();
        self.batches.push_back(Queued { id: self.next_id, batch, in_flight: false });
        self.next_id += 1;
    }

    fn remove(&mut self, id: u64) -> Option<Bytes> {
        let at = self.batches.iter().position(|q| q.id == id)?;
        let queued = self.batches.remove(at)?;
        self.bytes -= queued.batch.len();
        Some(queued.batch)
    }

    fn stats(&self) -> UploadStats {
        UploadStats { queued_batches: self.batches.len() as u64, ..self.stats }
    }
}

/// What became of one batch's upload.
enum Settled {
    Sent,
    Split(Bytes, Bytes),
    Rejected(u16),
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
    /// Upload tasks that may still be running, aborted by [`Uploader::close`].
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    failed_attempts: AtomicU64,
    notices: Arc<Notices>,
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
    /// `notices` hears of rejected batches (once each).
    pub fn new(client: reqwest::Client, config: UploadConfig, notices: Arc<Notices>) -> Result<Self, UploadError> {
        let mut auth = HeaderValue::from_str(&format!("ClientSecret {}", config.client_secret))
            .map_err(|_| UploadError::Secret)?;
        auth.set_sensitive(true);
        Ok(LogUploader(Arc::new(Uploader {
            client,
            config,
            auth,
            backlog: Mutex::new(Backlog {
                batches: VecDeque::new(),
                bytes: 0,
                next_id: 0,
                stats: UploadStats::default(),
                closed: false,
            }),
            route: Mutex::new(Route { destinations: vec![Destination::Edge], account: String::new() }),
            sending: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(Vec::new()),
            failed_attempts: AtomicU64::new(0),
            notices,
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
            Ok(runtime) => {
                let task = runtime.spawn(sending);
                {
                    let mut tasks = lock(&self.tasks);
                    tasks.retain(|t| !t.is_finished());
                    tasks.push(task.abort_handle());
                }
                task.await.unwrap_or_else(|e| {
                    Err(if e.is_cancelled() {
                        UploadError::Closed
                    } else {
                        UploadError::Network(format!("the upload task failed: {e}"))
                    })
                })
            }
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

    /// Queues batches for the next `flush`, dropping the oldest (counted) beyond the bound. A
    /// batch being uploaded is leaving: it is neither dropped nor counted against the bound.
    pub fn enqueue(&self, batches: impl IntoIterator<Item = Vec<u8>>) {
        let mut backlog = lock(&self.backlog);
        for batch in batches {
            backlog.stats.batches_enqueued += 1;
            if backlog.closed {
                backlog.stats.dropped_batches += 1;
                backlog.stats.dropped_bytes += batch.len() as u64;
                continue;
            }
            backlog.push(Bytes::from(batch));
        }
        // Counted once, then kept up to date as batches go: one pass over the backlog.
        let waiting = backlog.batches.iter().filter(|q| !q.in_flight);
        let (mut count, mut bytes) = waiting.fold((0, 0), |(n, b), q| (n + 1, b + q.batch.len()));
        while bytes > self.config.backlog_bytes && count > 1 {
            let Some(oldest) = backlog.batches.iter().find(|q| !q.in_flight).map(|q| q.id) else { break };
            let Some(old) = backlog.remove(oldest) else { break };
            count -= 1;
            bytes -= old.len();
            backlog.stats.dropped_batches += 1;
            backlog.stats.dropped_bytes += old.len() as u64;
        }
    }

    /// Hands the backlog to the caller instead of uploading it (offline providers and the test
    /// kit read what would have been sent); the batches count as sent. A batch in flight stays.
    pub fn take_backlog(&self) -> Vec<Bytes> {
        let mut backlog = lock(&self.backlog);
        let idle: Vec<u64> = backlog.batches.iter().filter(|q| !q.in_flight).map(|q| q.id).collect();
        let taken: Vec<Bytes> = idle.into_iter().filter_map(|id| backlog.remove(id)).collect();
        backlog.stats.batches_sent += taken.len() as u64;
        backlog.stats.bytes_sent += taken.iter().map(|b| b.len() as u64).sum::<u64>();
        taken
    }

    pub fn backlog_len(&self) -> usize {
        lock(&self.backlog).batches.len()
    }

    /// The counters, read together so that they add up.
    pub fn stats(&self) -> UploadStats {
        UploadStats { failed_attempts: self.failed_attempts.load(Ordering::Relaxed), ..lock(&self.backlog).stats() }
    }

    /// Ends uploading for good: running uploads are aborted (no request leaves after this
    /// returns) and later batches are counted as dropped. With `drop_queued`, what is still
    /// queued is counted as dropped too; without (a host that never uploads), it stays for
    /// [`Uploader::take_backlog`].
    pub fn close(&self, drop_queued: bool) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        let mut backlog = lock(&self.backlog);
        backlog.closed = true;
        if !drop_queued {
            return;
        }
        let undelivered: Vec<Bytes> = backlog.batches.drain(..).map(|q| q.batch).collect();
        backlog.bytes = 0;
        backlog.stats.dropped_batches += undelivered.len() as u64;
        backlog.stats.dropped_bytes += undelivered.iter().map(|b| b.len() as u64).sum::<u64>();
    }

    /// `LogUploader::flush`, in whichever task runs it.
    async fn send_backlog(&self) -> Result<usize, UploadError> {
        let _one_at_a_time = self.sending.lock().await;
        let mut sent = 0;
        loop {
            let next = {
                let mut backlog = lock(&self.backlog);
                if backlog.closed {
                    return Err(UploadError::Closed);
                }
                backlog.batches.iter_mut().find(|q| !q.in_flight).map(|q| {
                    q.in_flight = true;
                    (q.id, q.batch.clone())
                })
            };
            let Some((id, batch)) = next else { return Ok(sent) };
            let outcome = self.send(&batch).await;
            let mut backlog = lock(&self.backlog);
            let settled = match outcome {
                Ok(()) => Settled::Sent,
                Err(UploadError::Http(413)) => match split(&batch) {
                    Some((first, second)) => Settled::Split(first, second),
                    None => Settled::Rejected(413),
                },
                Err(UploadError::Http(status @ (400 | 422))) => Settled::Rejected(status),
                Err(e) => {
                    if let Some(q) = backlog.batches.iter_mut().find(|q| q.id == id) {
                        q.in_flight = false;
                    }
                    return Err(e);
                }
            };
            // Gone meanwhile: `close` has counted it as dropped.
            let Some(at) = backlog.batches.iter().position(|q| q.id == id) else { continue };
            match settled {
                Settled::Sent => {
                    backlog.remove(id);
                    backlog.stats.batches_sent += 1;
                    backlog.stats.bytes_sent += batch.len() as u64;
                    sent += 1;
                }
                Settled::Split(first, second) => {
                    backlog.remove(id);
                    // In place, oldest first: the halves leave before anything queued later.
                    for half in [second, first] {
                        backlog.bytes += half.len();
                        let half_id = backlog.next_id;
                        backlog.next_id += 1;
                        backlog.batches.insert(at, Queued { id: half_id, batch: half, in_flight: false });
                    }
                    backlog.stats.batches_enqueued += 1;
                    backlog.stats.split_batches += 1;
                }
                Settled::Rejected(status) => {
                    backlog.remove(id);
                    backlog.stats.rejected_batches += 1;
                    drop(backlog);
                    self.notices.push(
                        Level::Warn,
                        format!(
                            "Confidence refused a log batch of {} bytes with HTTP {status}; it is dropped (confidence_log_batches_rejected_total) and the uploads behind it go on",
                            batch.len()
                        ),
                    );
                }
            }
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
            self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        };
        http::post_protobuf(&self.client, url, &self.auth, body, &policy, failed).await.map(drop).map_err(Into::into)
    }
}

/// A batch as two smaller ones, entries split in halves (exposures first, then the resolve
/// aggregates; telemetry stays with the first half), or `None` for a batch of one entry or
/// one that does not decode.
fn split(batch: &[u8]) -> Option<(Bytes, Bytes)> {
    let mut first = WriteFlagLogsRequest::decode(batch).ok()?;
    let entries = first.flag_assigned.len() + first.client_resolve_info.len() + first.flag_resolve_info.len();
    if entries + usize::from(first.telemetry_data.is_some()) < 2 {
        return None;
    }
    if entries == 1 {
        // One entry and telemetry: they part.
        let telemetry_data = first.telemetry_data.take();
        let second = std::mem::take(&mut first);
        first.telemetry_data = telemetry_data;
        return Some((Bytes::from(first.encode_to_vec()), Bytes::from(second.encode_to_vec())));
    }
    let mut to_move = entries / 2;
    let second = WriteFlagLogsRequest {
        flag_resolve_info: take_last(&mut first.flag_resolve_info, &mut to_move),
        client_resolve_info: take_last(&mut first.client_resolve_info, &mut to_move),
        flag_assigned: take_last(&mut first.flag_assigned, &mut to_move),
        telemetry_data: None,
    };
    Some((Bytes::from(first.encode_to_vec()), Bytes::from(second.encode_to_vec())))
}

/// Up to `n` entries off the end of `from`, counted down from `n`.
fn take_last<T>(from: &mut Vec<T>, n: &mut usize) -> Vec<T> {
    let k = (*n).min(from.len());
    *n -= k;
    from.split_off(from.len() - k)
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
        let up = LogUploader::new(reqwest::Client::new(), config, Default::default()).unwrap();
        up.enqueue([vec![1; 4], vec![2; 4], vec![3; 4]]);
        assert_eq!(up.backlog_len(), 2);
        let stats = up.stats();
        assert_eq!((stats.batches_enqueued, stats.dropped_batches, stats.dropped_bytes), (3, 1, 4));
    }

    #[test]
    fn a_batch_splits_into_halves_down_to_one_entry() {
        use confidence_resolver::proto::confidence::flags::resolver::v1::events::FlagAssigned;
        let assigned = |id: &str| FlagAssigned { resolve_id: id.into(), ..Default::default() };
        let batch = WriteFlagLogsRequest {
            flag_assigned: (0..5).map(|i| assigned(&format!("r{i}"))).collect(),
            ..Default::default()
        };
        let (a, b) = split(&batch.encode_to_vec()).expect("five entries split");
        let ids = |bytes: &Bytes| {
            WriteFlagLogsRequest::decode(bytes.as_ref())
                .unwrap()
                .flag_assigned
                .into_iter()
                .map(|f| f.resolve_id)
                .collect::<Vec<_>>()
        };
        assert_eq!((ids(&a), ids(&b)), (vec!["r0".into(), "r1".into(), "r2".into()], vec!["r3".into(), "r4".into()]));
        let one = WriteFlagLogsRequest { flag_assigned: vec![assigned("only")], ..Default::default() };
        assert!(split(&one.encode_to_vec()).is_none(), "one entry cannot be split");
        assert!(split(&[0xff, 0xff]).is_none(), "garbage is not split");
    }
}
