//! One way to talk HTTP for every background task (CDN sync, log upload, remote store): how
//! clients are built (rustls on ring, proxies, extra trust roots, timeouts, user agent), how
//! errors read, and the retry timing (exponential backoff with jitter, `Retry-After`).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{NoProxy, Proxy, StatusCode, Url};

use crate::crypto;

/// Bound on establishing a connection (TCP, proxy tunnel and TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every request sends as `User-Agent`: this package and its version.
pub const USER_AGENT: &str = concat!("confidence-openfeature-provider-node/", env!("CARGO_PKG_VERSION"));

/// How a host's HTTP clients reach the network. One per host: the CDN sync, the log upload and
/// the remote materialization store all go the same way (corporate proxies and CAs apply to
/// all of them).
#[derive(Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each wait for data (response head or the next body chunk): a stalled server is
    /// noticed without cutting a large download that still moves. `None`: only the per-request
    /// bound applies.
    pub read_timeout: Option<Duration>,
    /// A proxy for every request, whatever the environment says (`NO_PROXY` still applies).
    pub proxy: Option<String>,
    /// `HTTPS_PROXY` / `https_proxy`: for https targets that are not loopback.
    pub env_https_proxy: Option<String>,
    /// `HTTP_PROXY` / `http_proxy`: for plain-http targets that are not loopback.
    pub env_http_proxy: Option<String>,
    /// `NO_PROXY` / `no_proxy`: hosts, domains and CIDRs that never go through a proxy.
    pub no_proxy: Option<String>,
    /// PEM certificates trusted in addition to the system's roots (a corporate CA).
    pub extra_ca_pem: Vec<String>,
    /// A product token put before ours in `User-Agent` (e.g. `my-service/1.2`).
    pub user_agent_prefix: Option<String>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: None,
            proxy: None,
            env_https_proxy: None,
            env_http_proxy: None,
            no_proxy: None,
            extra_ca_pem: Vec::new(),
            user_agent_prefix: None,
        }
    }
}

/// Proxy URLs may carry credentials: `Debug` shows only whether one is set.
impl fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<none>" };
        f.debug_struct("NetConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("proxy", &set(&self.proxy))
            .field("env_https_proxy", &set(&self.env_https_proxy))
            .field("env_http_proxy", &set(&self.env_http_proxy))
            .field("no_proxy", &self.no_proxy)
            .field("extra_ca_pem", &self.extra_ca_pem.len())
            .field("user_agent_prefix", &self.user_agent_prefix)
            .finish()
    }
}

impl NetConfig {
    /// Reads the proxy variables and `NODE_EXTRA_CA_CERTS` through `lookup` (the process
    /// environment in the addon, a map in tests). Upper case wins over lower case, as in curl.
    /// An unreadable `NODE_EXTRA_CA_CERTS` file is skipped: Node itself only warns about it at
    /// start-up, and the options' own `caCertificates` are the place for hard requirements.
    pub fn with_env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var =
            |name: &str| lookup(name).or_else(|| lookup(&name.to_ascii_lowercase())).filter(|v| !v.trim().is_empty());
        self.env_https_proxy = var("HTTPS_PROXY");
        self.env_http_proxy = var("HTTP_PROXY");
        self.no_proxy = var("NO_PROXY");
        if let Some(pem) = var("NODE_EXTRA_CA_CERTS").and_then(|path| std::fs::read_to_string(path).ok()) {
            self.extra_ca_pem.push(pem);
        }
        self
    }

    /// The `User-Agent` header value.
    pub fn user_agent(&self) -> String {
        match self.user_agent_prefix.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(prefix) => format!("{prefix} {USER_AGENT}"),
            None => USER_AGENT.to_string(),
        }
    }

    /// Checks what can be checked before any request: proxy URLs parse, certificates are PEM.
    /// Messages never repeat a proxy URL (it may hold a password).
    pub fn validate(&self) -> Result<(), NetError> {
        for (setting, value) in
            [("proxy", &self.proxy), ("HTTPS_PROXY", &self.env_https_proxy), ("HTTP_PROXY", &self.env_http_proxy)]
        {
            if let Some(url) = value {
                proxy_url(url).map_err(|reason| NetError::Proxy { setting, reason })?;
            }
        }
        for (i, pem) in self.extra_ca_pem.iter().enumerate() {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|_| NetError::CaNotPem { bundle: i + 1 })?;
            if certs.is_empty() {
                return Err(NetError::CaEmpty { bundle: i + 1 });
            }
        }
        if self.connect_timeout.is_zero() || self.read_timeout.is_some_and(|t| t.is_zero()) {
            return Err(NetError::ZeroTimeout);
        }
        Ok(())
    }
}

/// A network configuration that cannot work. Never repeats a proxy URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// `setting` is the option or environment variable the proxy came from.
    #[error("{setting}: {reason}")]
    Proxy { setting: &'static str, reason: String },
    #[error("caCertificates: bundle #{bundle} is not valid PEM")]
    CaNotPem { bundle: usize },
    #[error("caCertificates: bundle #{bundle} holds no certificate")]
    CaEmpty { bundle: usize },
    #[error("timeouts must be greater than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The client secret would travel in clear text.
    #[error("plain http is allowed only to loopback hosts (127.0.0.0/8, ::1, localhost), not {host:?}: use https")]
    Insecure { host: String },
}

/// The rule for every URL the provider sends its secret or state to: https, or plain http to
/// an IP literal in 127.0.0.0/8 or ::1, or exactly `localhost`.
pub fn require_secure(url: &Url) -> Result<(), NetError> {
    match url.scheme() {
        "https" => Ok(()),
        _ if is_loopback(url) => Ok(()),
        _ => Err(NetError::Insecure { host: url.host_str().unwrap_or_default().to_string() }),
    }
}

/// Confidence's endpoints do not redirect: a request carrying the secret or a state follows
/// a redirect only within its origin, and fails readably otherwise.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let origin = |u: &Url| (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default());
        let first = attempt.previous().first().map(origin);
        if attempt.previous().len() > 5 {
            attempt.error(RedirectRefused("too many redirects".into()))
        } else if first.is_some_and(|f| f == origin(attempt.url())) {
            attempt.follow()
        } else {
            let to = attempt.url().host_str().unwrap_or_default().to_string();
            attempt.error(RedirectRefused(format!("a redirect to another origin ({to}) was refused")))
        }
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// A proxy URL: `http://` or `https://` (credentials allowed), or a bare `host:port`.
fn proxy_url(value: &str) -> Result<Url, String> {
    let value = value.trim();
    let with_scheme = if value.contains("://") { value.to_string() } else { format!("http://{value}") };
    let url = Url::parse(&with_scheme).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some() => Ok(url),
        "http" | "https" => Err("has no host".into()),
        other => Err(format!("unsupported proxy scheme {other:?} (expected http or https)")),
    }
}

/// A client for requests to `base`: the configured proxy or else, unless `base` is loopback,
/// the environment's; extra CAs merged with the system roots; plain http only to loopback
/// ([`require_secure`]); redirects followed only within their origin.
pub fn client(base: &Url, net: &NetConfig) -> Result<reqwest::Client, NetError> {
    crypto::install_tls_provider();
    require_secure(base)?;
    net.validate()?;
    let mut builder = reqwest::Client::builder()
        .connect_timeout(net.connect_timeout)
        .redirect(same_origin_redirects())
        .https_only(base.scheme() == "https")
        .user_agent(net.user_agent())
        // The environment is read once, by `NetConfig::with_env`, not behind our back.
        .no_proxy();
    if let Some(timeout) = net.read_timeout {
        builder = builder.read_timeout(timeout);
    }
    let no_proxy = || net.no_proxy.as_deref().and_then(NoProxy::from_string);
    let proxy = |setting: &'static str, url: &str, make: fn(Url) -> reqwest::Result<Proxy>| {
        let parsed = proxy_url(url).map_err(|reason| NetError::Proxy { setting, reason })?;
        make(parsed)
            .map(|p| p.no_proxy(no_proxy()))
            .map_err(|_| NetError::Proxy { setting, reason: "invalid proxy URL".into() })
    };
    if let Some(url) = &net.proxy {
        builder = builder.proxy(proxy("proxy", url, Proxy::all::<Url>)?);
    } else if !is_loopback(base) {
        if let Some(url) = &net.env_https_proxy {
            builder = builder.proxy(proxy("HTTPS_PROXY", url, Proxy::https::<Url>)?);
        }
        if let Some(url) = &net.env_http_proxy {
            builder = builder.proxy(proxy("HTTP_PROXY", url, Proxy::http::<Url>)?);
        }
    }
    let mut roots = Vec::new();
    for pem in &net.extra_ca_pem {
        roots.extend(
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| NetError::Client(error_chain(&e)))?,
        );
    }
    if !roots.is_empty() {
        builder = builder.tls_certs_merge(roots);
    }
    builder.build().map_err(|e| NetError::Client(error_chain(&e.without_url())))
}

// ---------------------------------------------------------------------------------------------
// Protobuf POSTs (log upload, remote materialization store)

/// Why a POST failed (after its retries). Never contains the URL's secrets or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    #[error("HTTP {0}")]
    Http(u16),
    #[error("{0}")]
    Network(String),
    #[error("the request timed out")]
    Timeout,
}

impl PostError {
    /// Network trouble, timeouts, 408, 429 and 5xx may pass; other statuses will not.
    pub fn retryable(&self) -> bool {
        match self {
            PostError::Http(s) => *s == 408 || *s == 429 || *s >= 500,
            _ => true,
        }
    }
}

/// Attempts and timing of one logical POST.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Delay before the first retry, doubling after.
    pub base_delay: Duration,
    /// Longest pause between attempts, also for a server's `Retry-After`.
    pub max_delay: Duration,
    /// Bound of each attempt.
    pub timeout: Duration,
}

/// POSTs `body` as `application/x-protobuf` with `authorization`, retrying per `policy`
/// (honouring `Retry-After` on 429/5xx); the body of the first 2xx answer. `on_failed_attempt`
/// runs once per failed attempt (for counters).
pub async fn post_protobuf(
    client: &reqwest::Client,
    url: &str,
    authorization: &HeaderValue,
    body: Bytes,
    policy: &RetryPolicy,
    mut on_failed_attempt: impl FnMut(),
) -> Result<Bytes, PostError> {
    let mut backoff = Backoff::new(policy.max_delay).with_base(policy.base_delay);
    let mut attempt = 0;
    loop {
        let (error, hint) = match post_once(client, url, authorization, body.clone(), policy.timeout).await {
            Ok(answer) => return Ok(answer),
            Err(failed) => failed,
        };
        on_failed_attempt();
        attempt += 1;
        if attempt >= policy.attempts.max(1) || !error.retryable() {
            return Err(error);
        }
        tokio::time::sleep(backoff.delay(attempt - 1, hint)).await;
    }
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    authorization: &HeaderValue,
    body: Bytes,
    timeout: Duration,
) -> Result<Bytes, (PostError, Option<Duration>)> {
    let request = client
        .post(url)
        .header(CONTENT_TYPE, "application/x-protobuf")
        .header(AUTHORIZATION, authorization.clone())
        .timeout(timeout)
        .body(body);
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            PostError::Timeout
        } else {
            PostError::Network(error_chain(&e.without_url()))
        }
    };
    let response = request.send().await.map_err(|e| (classify(e), None))?;
    let status = response.status();
    if status.is_success() {
        // Read the whole answer (also so the connection can be reused).
        return response.bytes().await.map_err(|e| (classify(e), None));
    }
    let hint = (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
        .then(|| response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    Err((PostError::Http(status.as_u16()), hint))
}

/// Plain http is acceptable only when the traffic never leaves the machine.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An error and its sources on one line ("a: b: c"), skipping repeats. reqwest's own message
/// is generic; the cause ("connection refused") is in the chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// `Retry-After` as a delay from `now`: delta-seconds or an HTTP date (IMF-fixdate, RFC 850 or
/// asctime). A date in the past means "now". `None` when unparseable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = http_date::parse(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

mod http_date {
    //! Just enough HTTP-date parsing for `Retry-After` (RFC 9110 §5.6.7).
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

    /// All three formats carry the same tokens: a weekday (ignored), the day before the year,
    /// a month name, `hh:mm:ss` and `GMT` (ignored).
    pub fn parse(value: &str) -> Option<SystemTime> {
        let (mut day, mut year, mut month, mut time) = (None, None, None, None);
        for token in value.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
            if token.contains(':') {
                time = Some(parse_time(token)?);
            } else if token.bytes().all(|b| b.is_ascii_digit()) {
                let n: u32 = token.parse().ok()?;
                if day.is_none() {
                    day = Some(n);
                } else if year.is_none() {
                    year = Some(match (token.len(), n) {
                        (2, 70..) => 1900 + n,
                        (2, _) => 2000 + n,
                        _ => n,
                    });
                } else {
                    return None;
                }
            } else if let Some(m) = MONTHS.iter().position(|m| token.eq_ignore_ascii_case(m)) {
                month = Some(m as u32 + 1);
            }
        }
        let (day, year, month, (h, m, s)) = (day?, year?, month?, time?);
        if !(1..=31).contains(&day) || year < 1970 {
            return None;
        }
        let days = days_from_civil(year as i64, month, day);
        let secs = days * 86_400 + (h * 3600 + m * 60 + s) as i64;
        Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
    }

    fn parse_time(token: &str) -> Option<(u32, u32, u32)> {
        let mut parts = token.split(':').map(|p| p.parse::<u32>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        (parts.next().is_none() && h < 24 && m < 60 && s < 61).then_some((h, m, s))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm).
    fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month as i64 + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

// ---------------------------------------------------------------------------------------------
// Retry timing

/// A factor in [0.9, 1.1] applied to delays so many processes do not poll in lockstep.
/// Injectable so tests are deterministic.
#[derive(Debug, Clone)]
pub struct Jitter(JitterSource);

#[derive(Debug, Clone)]
enum JitterSource {
    Random(u64),
    Fixed(f64),
}

impl Jitter {
    /// Pseudo-random factors (xorshift seeded from the std hasher's per-process random keys).
    pub fn random() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
        Jitter(JitterSource::Random(hasher.finish() | 1))
    }

    /// Always `factor`, clamped to [0.9, 1.1]; `fixed(1.0)` disables jitter.
    pub fn fixed(factor: f64) -> Self {
        Jitter(JitterSource::Fixed(factor.clamp(0.9, 1.1)))
    }

    /// The next factor in [0.9, 1.1].
    pub fn factor(&mut self) -> f64 {
        match &mut self.0 {
            JitterSource::Fixed(f) => *f,
            JitterSource::Random(state) => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                let unit = (*state >> 11) as f64 / (1u64 << 53) as f64;
                0.9 + 0.2 * unit
            }
        }
    }

    /// `d` scaled by the next factor.
    pub fn apply(&mut self, d: Duration) -> Duration {
        Duration::try_from_secs_f64(d.as_secs_f64() * self.factor()).unwrap_or(d)
    }
}

/// Delays between retries after failed fetches (docs/state-cdn.md, "Polling, retries and applying a state").
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// First retry delay.
    pub const BASE: Duration = Duration::from_millis(500);

    /// Backoff capped at `max` (the poll interval), with random jitter.
    pub fn new(max: Duration) -> Self {
        Backoff { base: Self::BASE, max, jitter: Jitter::random() }
    }

    /// Starts from `base` instead of [`Backoff::BASE`].
    pub fn with_base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Replaces the jitter source (tests: `Jitter::fixed(1.0)`).
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// `min(max, base × 2^attempt)`, before jitter.
    pub fn unjittered(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Delay before retry number `attempt` (0 = first retry). A server's `Retry-After` replaces
    /// the computed delay, clamped to [base, max] and not jittered.
    pub fn delay(&mut self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wanted) => wanted.clamp(self.base.min(self.max), self.max),
            None => self.jitter.apply(self.unjittered(attempt)),
        }
    }
}
