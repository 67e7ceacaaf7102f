//! A fake Confidence for tests: the state CDN (`GET /<sha256(secret)>[.enc]` with ETags) and
//! the two log upload routes, on 127.0.0.1 only, with faults injectable per route down to the
//! byte level (hence plain tokio sockets and a hand-written HTTP/1.1 codec). Every connection
//! serves one request and is closed (`Connection: close`); keep-alive is not supported.
//!
//! Used as a library by Rust tests ([`FakeConfidence`]) and as the `fake-confidence` binary by
//! Node tests (see `src/bin/fake-confidence.rs` for its control protocol).

mod base64;
mod control;
pub mod http;
pub mod store;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{Limits, ParseError, Request};

/// The edge log route (docs/log-upload.md, "Destinations").
pub const LOG_WRITE_PATH: &str = "/v1/clientFlagLogs:write";
/// The Cloudflare log route (docs/log-upload.md, "Destinations").
pub const LOG_INGEST_PATH: &str = "/v1/flagLogs:ingest";
/// The binary's control endpoint (only when [`Options::control`] is on).
pub const CONTROL_PATH: &str = "/__control";

/// Which traffic a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /<digest>` and `GET /<digest>.enc`.
    Cdn,
    /// `POST /v1/clientFlagLogs:write` and `POST /v1/flagLogs:ingest`.
    Logs,
    /// `POST /v1/materialization:{read,write}MaterializedOperations`.
    Store,
}

/// How to misbehave on a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Serve normally.
    None,
    /// Answer with this status and a short text body.
    Status(u16),
    /// `429` with `Retry-After: <retry_after_secs>`.
    TooManyRequests { retry_after_secs: u64 },
    /// Wait this long, then serve normally.
    Slow(Duration),
    /// Send the normal headers (the full `Content-Length`; a 304 becomes the full 200), half of
    /// the body, then close.
    Truncate,
    /// `200` with 1 KiB of random bytes starting with `0x00` (an invalid protobuf tag, so a
    /// plain-state client fails to decode deterministically).
    Garbage,
    /// Read the request, then close with `SO_LINGER 0` (a TCP reset, no response).
    Reset,
    /// Close the listener (connections are refused). Server-wide: it stays down while any route
    /// has `Down`; setting another fault re-binds the same port. Inside `FailNext` it acts as
    /// `Reset`.
    Down,
    /// The inner fault for the next `n` requests on the route, then `None`.
    FailNext(u32, Box<Fault>),
    /// `413 Payload Too Large` for a request body over `max_bytes`, else serve normally (a
    /// server with a body limit; counted as a fault on every request while set).
    BodyOver { max_bytes: usize },
}

/// Per-route counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests received on the route (whatever the outcome).
    pub requests: u64,
    /// `304 Not Modified` answers.
    pub not_modified: u64,
    /// Requests that got a fault other than `None` (including `Slow`).
    pub faults_injected: u64,
}

/// A log upload the server accepted (answered `200`: no fault, `Slow` or `Garbage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedLog {
    pub path: String,
    /// Headers as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedLog {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }
}

/// How to start the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Port on 127.0.0.1; `0` picks a free one.
    pub port: u16,
    /// Serve the JSON control protocol on [`CONTROL_PATH`].
    pub control: bool,
}

/// Lowercase hex SHA-256 of a client secret: the CDN path segment serving its state.
pub fn secret_digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A running fake. Dropping it stops accepting connections.
pub struct FakeConfidence {
    shared: Arc<Shared>,
}

impl FakeConfidence {
    /// Starts on a free port of 127.0.0.1, without the control endpoint.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> io::Result<Self> {
        let listener = bind(options.port)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            port,
            control: options.control,
            closed: AtomicBool::new(false),
            states: Mutex::default(),
            faults: Mutex::default(),
            counters: Mutex::default(),
            logs: Mutex::default(),
            store: Mutex::default(),
            listening: tokio::sync::Mutex::new(None),
            rng: Mutex::new(seed()),
        });
        *shared.listening.lock().await = Some(shared.spawn_accept(listener));
        Ok(FakeConfidence { shared })
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `http://127.0.0.1:<port>/`, the CDN base URL and the log API base.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.shared.port)
    }

    /// Serves `body` at `/<digest>` and `/<digest>.enc` with this ETag (empty = no ETag, never
    /// `304`). Replaces any previous state for that digest.
    pub fn set_state(&self, digest: impl Into<String>, body: Vec<u8>, etag: impl Into<String>) {
        self.shared.set_state(digest.into(), body, etag.into());
    }

    /// Stops serving a digest (`404` afterwards).
    pub fn remove_state(&self, digest: &str) {
        self.shared.states().remove(digest);
    }

    /// Sets the fault for a route. Entering or leaving [`Fault::Down`] closes or re-binds the
    /// listener before returning; re-binding fails if another process took the port meanwhile.
    pub async fn set_fault(&self, route: Route, fault: Fault) -> io::Result<()> {
        self.shared.set_fault(route, fault).await
    }

    /// The fault currently set on a route (a `FailNext` shows its remaining count).
    pub fn fault(&self, route: Route) -> Fault {
        self.shared.faults().get(&route).cloned().unwrap_or(Fault::None)
    }

    pub fn counters(&self, route: Route) -> Counters {
        self.shared.counters().get(&route).copied().unwrap_or_default()
    }

    /// Every accepted log upload, in arrival order.
    pub fn received_logs(&self) -> Vec<ReceivedLog> {
        self.shared.logs().clone()
    }

    pub fn clear_logs(&self) {
        self.shared.logs().clear();
    }

    /// Puts `unit` into the materialized segment `materialization` of the remote store.
    pub fn store_include(&self, materialization: &str, unit: &str) {
        self.shared.store().include(materialization, unit);
    }

    /// Variants clients wrote to the remote store: `(materialization, unit, rule, variant)`.
    pub fn store_variants(&self) -> Vec<(String, String, String, String)> {
        self.shared.store().variants()
    }

    pub fn reset_counters(&self) {
        self.shared.counters().clear();
    }
}

impl Drop for FakeConfidence {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Ok(mut listening) = self.shared.listening.try_lock() {
            if let Some(l) = listening.take() {
                let _ = l.stop.send(());
            }
        }
    }
}

struct Listening {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct State {
    body: Vec<u8>,
    etag: String,
}

/// Everything connection tasks and the control endpoint share.
struct Shared {
    port: u16,
    control: bool,
    /// The owning handle was dropped: never re-bind.
    closed: AtomicBool,
    states: Mutex<HashMap<String, State>>,
    faults: Mutex<HashMap<Route, Fault>>,
    counters: Mutex<HashMap<Route, Counters>>,
    logs: Mutex<Vec<ReceivedLog>>,
    store: Mutex<store::Store>,
    /// Async: held while waiting for the accept task to release the port.
    listening: tokio::sync::Mutex<Option<Listening>>,
    rng: Mutex<u64>,
}

/// The shared maps hold plain data, so a panicking holder cannot leave them inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn states(&self) -> MutexGuard<'_, HashMap<String, State>> {
        lock(&self.states)
    }

    fn faults(&self) -> MutexGuard<'_, HashMap<Route, Fault>> {
        lock(&self.faults)
    }

    fn counters(&self) -> MutexGuard<'_, HashMap<Route, Counters>> {
        lock(&self.counters)
    }

    fn logs(&self) -> MutexGuard<'_, Vec<ReceivedLog>> {
        lock(&self.logs)
    }

    fn store(&self) -> MutexGuard<'_, store::Store> {
        lock(&self.store)
    }

    fn count(&self, route: Route, update: impl FnOnce(&mut Counters)) {
        update(self.counters().entry(route).or_default());
    }

    fn set_state(&self, digest: String, body: Vec<u8>, etag: String) {
        self.states().insert(digest, State { body, etag });
    }

    async fn set_fault(self: &Arc<Self>, route: Route, fault: Fault) -> io::Result<()> {
        let mut listening = self.listening.lock().await;
        let down = {
            let mut faults = self.faults();
            faults.insert(route, fault);
            faults.values().any(|f| *f == Fault::Down)
        };
        if down {
            if let Some(l) = listening.take() {
                let _ = l.stop.send(());
                // The task owns the listener: once it has returned, the port is closed.
                let _ = l.task.await;
            }
        } else if listening.is_none() && !self.closed.load(Ordering::SeqCst) {
            *listening = Some(self.spawn_accept(bind(self.port)?));
        }
        Ok(())
    }

    /// The fault for the next request on `route`, consuming one use of a `FailNext`.
    fn take_fault(&self, route: Route) -> Fault {
        let mut faults = self.faults();
        let current = faults.entry(route).or_insert(Fault::None);
        let taken = match current {
            Fault::FailNext(0, _) => {
                *current = Fault::None;
                Fault::None
            }
            Fault::FailNext(n, inner) => {
                let inner = (**inner).clone();
                *n -= 1;
                if *n == 0 {
                    *current = Fault::None;
                }
                inner
            }
            other => other.clone(),
        };
        concrete(taken)
    }

    fn spawn_accept(self: &Arc<Self>, listener: TcpListener) -> Listening {
        let (stop, mut stopped) = oneshot::channel();
        let shared = self.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(serve(stream, shared.clone()));
                        }
                        // Out of descriptors and the like: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                }
            }
        });
        Listening { stop, task }
    }

    fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut state = lock(&self.rng);
        (0..n)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 32) as u8
            })
            .collect()
    }
}

/// What a request actually gets: `FailNext` unwrapped, `Down` (which needs the listener)
/// degraded to `Reset` for a single request.
fn concrete(fault: Fault) -> Fault {
    match fault {
        Fault::FailNext(0, _) => Fault::None,
        Fault::FailNext(_, inner) => concrete(*inner),
        Fault::Down => Fault::Reset,
        other => other,
    }
}

fn seed() -> u64 {
    RandomState::new().build_hasher().finish() | 1
}

fn bind(port: u16) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // Re-binding after `Down` must work while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

fn route_of(request: &Request) -> Option<Route> {
    match request.path() {
        LOG_WRITE_PATH | LOG_INGEST_PATH => Some(Route::Logs),
        store::READ_PATH | store::WRITE_PATH => Some(Route::Store),
        _ if request.method == "GET" => Some(Route::Cdn),
        _ => None,
    }
}

/// One connection: one request, one response (or a fault), close.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let request = match http::read_request(&mut stream, Limits::default()).await {
        Ok(request) => request,
        Err(ParseError::Closed | ParseError::Incomplete | ParseError::Io(_)) => return,
        Err(error) => {
            let status = match error {
                ParseError::HeadTooLarge(_) => 431,
                ParseError::BodyTooLarge(_) => 413,
                _ => 400,
            };
            let _ = http::write_response(&mut stream, status, &[], error.to_string().as_bytes()).await;
            return;
        }
    };
    if shared.control && request.path() == CONTROL_PATH {
        control::serve(&shared, request, stream).await;
        return;
    }
    let Some(route) = route_of(&request) else {
        let _ = http::write_response(&mut stream, 404, &[], b"no such route\n").await;
        return;
    };
    shared.count(route, |c| c.requests += 1);
    let fault = shared.take_fault(route);
    if fault != Fault::None {
        shared.count(route, |c| c.faults_injected += 1);
    }
    let _ = respond(&shared, route, &request, fault, &mut stream).await;
}

async fn respond(
    shared: &Shared,
    route: Route,
    request: &Request,
    fault: Fault,
    stream: &mut TcpStream,
) -> io::Result<()> {
    match fault {
        Fault::None | Fault::Down | Fault::FailNext(..) => respond_normally(shared, route, request, stream).await,
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            respond_normally(shared, route, request, stream).await
        }
        Fault::Status(status) => http::write_response(stream, status, &[], b"injected fault\n").await,
        Fault::BodyOver { max_bytes } if request.body.len() > max_bytes => {
            http::write_response(stream, 413, &[], b"payload too large\n").await
        }
        Fault::BodyOver { .. } => respond_normally(shared, route, request, stream).await,
        Fault::TooManyRequests { retry_after_secs } => {
            http::write_response(stream, 429, &[("Retry-After", retry_after_secs.to_string())], b"slow down\n").await
        }
        Fault::Truncate => {
            let (status, headers, mut body) = full_response(shared, route, request, false);
            if body.len() < 2 {
                body = b"a body cut in two".to_vec();
            }
            stream.write_all(&http::response_head(status, &headers, body.len())).await?;
            stream.write_all(&body[..body.len() / 2]).await?;
            stream.flush().await
            // Dropping the stream closes it with the body incomplete.
        }
        Fault::Garbage => {
            if route == Route::Logs {
                store_log(shared, request);
            }
            let mut garbage = shared.random_bytes(1024);
            garbage[0] = 0;
            http::write_response(stream, 200, &[("Content-Type", "application/octet-stream".into())], &garbage).await
        }
        Fault::Reset => {
            // SO_LINGER 0: closing sends RST instead of FIN.
            stream.set_zero_linger()
        }
    }
}

async fn respond_normally(shared: &Shared, route: Route, request: &Request, stream: &mut TcpStream) -> io::Result<()> {
    if route == Route::Logs && request.method == "POST" {
        store_log(shared, request);
    }
    let (status, headers, body) = full_response(shared, route, request, true);
    if status == 304 {
        shared.count(route, |c| c.not_modified += 1);
    }
    http::write_response(stream, status, &headers, &body).await
}

/// The fault-free answer, without side effects (but a store write's). `conditional = false` ignores `If-None-Match`
/// (a truncated response needs a body).
fn full_response(
    shared: &Shared,
    route: Route,
    request: &Request,
    conditional: bool,
) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
    match route {
        Route::Logs if request.method != "POST" => (405, vec![("Allow", "POST".into())], b"POST only\n".to_vec()),
        Route::Logs => (200, vec![], Vec::new()),
        Route::Store if request.method != "POST" => (405, vec![("Allow", "POST".into())], b"POST only\n".to_vec()),
        Route::Store
            if !request
                .header("authorization")
                .is_some_and(|a| a.len() > "ClientSecret ".len() && a.starts_with("ClientSecret ")) =>
        {
            (401, vec![], b"missing ClientSecret authorization\n".to_vec())
        }
        Route::Store => {
            let (status, body) = shared.store().answer(request.path(), &request.body);
            (status, vec![("Content-Type", "application/x-protobuf".into())], body)
        }
        Route::Cdn => {
            let segment = request.path().trim_start_matches('/');
            let digest = segment.strip_suffix(".enc").unwrap_or(segment);
            let states = shared.states();
            let Some(state) = states.get(digest) else {
                return (404, vec![], b"no state at this path\n".to_vec());
            };
            let mut headers = Vec::new();
            if !state.etag.is_empty() {
                headers.push(("ETag", state.etag.clone()));
                let fresh = request.header("if-none-match").is_some_and(|v| etag_matches(v, &state.etag));
                if conditional && fresh {
                    return (304, headers, Vec::new());
                }
            }
            headers.push(("Content-Type", "application/octet-stream".into()));
            (200, headers, state.body.clone())
        }
    }
}

/// `If-None-Match` comparison: a list of tags or `*`, weak comparison (RFC 9110 §13.1.2).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let etag = strip(etag);
    if_none_match.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}

fn store_log(shared: &Shared, request: &Request) {
    shared.logs().push(ReceivedLog {
        path: request.path().to_string(),
        headers: request.headers.clone(),
        body: request.body.clone(),
    });
}

#[cfg(test)]
mod tests;
