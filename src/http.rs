//! One way to talk HTTP for every background task (CDN sync, log upload): how clients are
//! built (rustls on ring, no proxy for loopback targets), how errors read, and the retry
//! timing (exponential backoff with jitter, `Retry-After`).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use reqwest::Url;

use crate::crypto;

/// A client for requests to `base`. Traffic to loopback never goes through a proxy; an https
/// base never follows a redirect down to plain http.
pub fn client(base: &Url, connect_timeout: Duration) -> Result<reqwest::Client, String> {
    crypto::install_tls_provider();
    let mut builder = reqwest::Client::builder().connect_timeout(connect_timeout).https_only(base.scheme() == "https");
    if is_loopback(base) {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| error_chain(&e.without_url()))
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

/// Delays between retries after failed fetches (HOST.md §B.5).
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
