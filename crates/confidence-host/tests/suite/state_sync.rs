//! CDN state sync against the fake Confidence: fixtures (plain and encrypted), ETags, every
//! fault, config validation, backoff, and the polling loop (apply, recover, stop).

use std::collections::BTreeMap;
use std::future::Future;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use confidence_host::crypto::{decrypt_state, encrypt_state, state_path, CryptoError, StateKey};
use confidence_host::engine::EngineError;
use confidence_host::http::{parse_retry_after, Backoff, Jitter, NetConfig};
use confidence_host::state_sync::{
    run_sync_loop, spawn_sync_loop, ApplyError, ConfigError, Fetched, FirstStateError, StateFetcher, StateSink,
    StateUpdate, SyncConfig, SyncError, SyncStatus, DEFAULT_CDN_BASE_URL,
};
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState;
use fake_confidence::{FakeConfidence, Fault, Route};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

const SECRET: &str = "test-client-secret";
const FIXTURE_ACCOUNT: &str = "confidence-demo-june";

use crate::common::{fixture, until};

fn fixture_key() -> StateKey {
    StateKey::from_hex(&String::from_utf8(fixture("encryption_key_test.hex")).unwrap()).unwrap()
}

/// The plain CDN body for the fixture state.
fn plain_fixture_body() -> Vec<u8> {
    ClientResolverState {
        state: fixture("resolver_state_current.pb"),
        account: FIXTURE_ACCOUNT.into(),
        log_destinations: vec![],
    }
    .encode_to_vec()
}

fn config(fake: &FakeConfidence) -> SyncConfig {
    SyncConfig {
        cdn_base_url: fake.base_url(),
        request_timeout: Duration::from_secs(2),
        net: NetConfig { connect_timeout: Duration::from_secs(1), ..NetConfig::default() },
        ..SyncConfig::new(SECRET)
    }
}

fn digest() -> String {
    state_path(SECRET, false)
}

async fn fake_with(body: Vec<u8>, etag: &str) -> FakeConfidence {
    let fake = FakeConfidence::start().await.unwrap();
    fake.set_state(digest(), body, etag);
    fake
}

fn expect_state(fetched: Fetched) -> StateUpdate {
    match fetched {
        Fetched::State(update) => update,
        Fetched::NotModified => panic!("expected a state, got 304"),
    }
}

/// Bounds an await: a hung future fails its test.
async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut).await.expect("finished in time")
}

// ---------------------------------------------------------------------------------------------
// Crypto and configuration

#[test]
fn encrypted_fixture_matches_the_worked_example() {
    let encrypted = fixture("resolver_state_encrypted.pb");
    let plain = decrypt_state(&fixture_key(), &encrypted).unwrap();
    assert_eq!(plain.len(), 245_738);
    assert_eq!(hex::encode(Sha256::digest(&plain)), "291e7b8d39591739b71eb97056a49d5554d4bcfddaecacd24e1fa3b78be85371");
    let decoded = ClientResolverState::decode(plain.as_slice()).unwrap();
    assert_eq!(decoded.account, "confidence-test");
    assert_eq!(decoded.state, fixture("resolver_state_current.pb"));
    // Re-encrypting with the fixture's nonce gives the fixture back byte for byte.
    let nonce: [u8; 12] = encrypted[..12].try_into().unwrap();
    assert_eq!(encrypt_state(&fixture_key(), nonce, &plain), encrypted);
}

#[test]
fn state_url_follows_the_spec() {
    let mut config = SyncConfig::new("my-client-secret");
    let digest = "4f16fdeb84f9ef7b2b0127ed4b2c255dd82e2ac7b56c441c9c9fce8991a76207";
    assert_eq!(config.state_url().unwrap().as_str(), format!("{DEFAULT_CDN_BASE_URL}{digest}"));
    config.encryption_key = Some(fixture_key());
    assert_eq!(config.state_url().unwrap().as_str(), format!("{DEFAULT_CDN_BASE_URL}{digest}.enc"));
    // A base without a trailing slash keeps its path.
    config.cdn_base_url = "https://mirror.example/states".into();
    assert_eq!(config.state_url().unwrap().as_str(), format!("https://mirror.example/states/{digest}.enc"));
}

#[test]
fn config_validation() {
    let url = |base: &str| SyncConfig { cdn_base_url: base.into(), ..SyncConfig::new(SECRET) }.state_url();
    for ok in
        ["https://cdn.example/", "http://127.0.0.1:8080/", "http://127.3.2.1/", "http://[::1]:9/", "http://LOCALHOST/"]
    {
        assert!(url(ok).is_ok(), "{ok}");
    }
    assert_eq!(url("http://cdn.example/"), Err(ConfigError::InsecureBaseUrl { host: "cdn.example".into() }));
    assert!(matches!(url("http://10.0.0.1/"), Err(ConfigError::InsecureBaseUrl { .. })));
    assert!(matches!(url("http://localhost.evil.example/"), Err(ConfigError::InsecureBaseUrl { .. })));
    assert!(matches!(url("ftp://cdn.example/"), Err(ConfigError::UnsupportedScheme { .. })));
    assert!(matches!(url("not a url"), Err(ConfigError::InvalidBaseUrl { .. })));
    assert!(matches!(url("https://cdn.example/?x=1"), Err(ConfigError::InvalidBaseUrl { .. })));
    assert!(matches!(url("https://user:pw@cdn.example/"), Err(ConfigError::InvalidBaseUrl { .. })));
    assert_eq!(SyncConfig::new("").state_url(), Err(ConfigError::EmptySecret));
    let zero = SyncConfig { request_timeout: Duration::ZERO, ..SyncConfig::new(SECRET) };
    assert_eq!(zero.state_url(), Err(ConfigError::ZeroTimeout));
    // The error surfaces when building the fetcher, with a readable message.
    let insecure = SyncConfig { cdn_base_url: "http://cdn.example/".into(), ..SyncConfig::new(SECRET) };
    let message = StateFetcher::new(insecure).unwrap_err().to_string();
    assert!(message.contains("https") && message.contains("cdn.example"), "{message}");
}

#[test]
fn secrets_and_keys_stay_out_of_debug_output() {
    let key_hex = String::from_utf8(fixture("encryption_key_test.hex")).unwrap();
    let config = SyncConfig { encryption_key: Some(fixture_key()), ..SyncConfig::new(SECRET) };
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(&key_hex[..16]), "{shown}");
    let fetcher = StateFetcher::new(config).unwrap();
    let shown = format!("{fetcher:?}");
    assert!(!shown.contains(SECRET) && !shown.contains(&key_hex[..16]), "{shown}");
    assert!(StateKey::from_hex("abc").unwrap_err().to_string().contains("64 hexadecimal characters"));
}

#[test]
fn backoff_doubles_caps_and_honours_retry_after() {
    let mut backoff = Backoff::new(Duration::from_secs(10)).with_jitter(Jitter::fixed(1.0));
    let ms = |n: u64| Duration::from_millis(n);
    let schedule: Vec<Duration> = (0..7).map(|n| backoff.unjittered(n)).collect();
    assert_eq!(schedule, [ms(500), ms(1000), ms(2000), ms(4000), ms(8000), ms(10_000), ms(10_000)]);
    assert_eq!(backoff.unjittered(200), ms(10_000), "no overflow");
    assert_eq!(backoff.delay(1, None), ms(1000));
    // Retry-After replaces the computed delay, clamped to [500 ms, max].
    assert_eq!(backoff.delay(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
    assert_eq!(backoff.delay(0, Some(Duration::from_secs(60))), Duration::from_secs(10));
    assert_eq!(backoff.delay(5, Some(Duration::ZERO)), ms(500));

    let mut high = Backoff::new(Duration::from_secs(10)).with_jitter(Jitter::fixed(1.1));
    assert_eq!(high.delay(0, None), ms(550));
    let mut low = Backoff::new(Duration::from_secs(10)).with_jitter(Jitter::fixed(0.9));
    assert_eq!(low.delay(2, None), ms(1800));
    let mut random = Backoff::new(Duration::from_secs(10));
    for _ in 0..1000 {
        let d = random.delay(0, None);
        assert!(d >= ms(450) && d <= ms(550), "{d:?}");
    }
    // A max below the base still bounds everything.
    let mut tiny = Backoff::new(ms(100)).with_jitter(Jitter::fixed(1.0));
    assert_eq!((tiny.delay(0, None), tiny.delay(0, Some(Duration::from_secs(5)))), (ms(100), ms(100)));
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
    let parse = |v: &str| parse_retry_after(v, now);
    assert_eq!(parse("120"), Some(Duration::from_secs(120)));
    assert_eq!(parse(" 0 "), Some(Duration::ZERO));
    assert_eq!(parse("Sun, 06 Nov 1994 08:50:07 GMT"), Some(Duration::from_secs(30)));
    assert_eq!(parse("Sunday, 06-Nov-94 08:51:37 GMT"), Some(Duration::from_secs(120)));
    assert_eq!(parse("Sun Nov  6 08:49:47 1994"), Some(Duration::from_secs(10)));
    assert_eq!(parse("Sat, 05 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO), "past dates mean now");
    for bad in ["", "soon", "-5", "1.5", "Sun, 06 Nov 1994 25:00:00 GMT", "06 1994 08:49:37"] {
        assert_eq!(parse(bad), None, "{bad}");
    }
}

// ---------------------------------------------------------------------------------------------
// One fetch

#[tokio::test]
async fn plain_fixture_state() {
    let body = plain_fixture_body();
    let fake = fake_with(body.clone(), "\"v1\"").await;
    let fetcher = StateFetcher::new(config(&fake)).unwrap();
    assert!(fetcher.url().ends_with(&digest()));
    let update = expect_state(fetcher.fetch().await.unwrap());
    assert_eq!(update.state, fixture("resolver_state_current.pb"));
    assert_eq!(update.account, FIXTURE_ACCOUNT);
    assert!(update.log_destinations.is_empty());
    assert_eq!(update.etag.as_deref(), Some("\"v1\""));
    assert_eq!(update.body, body);
    assert!(format!("{update:?}").contains("state_bytes: 245717"), "Debug shows sizes, not bytes");
}

#[tokio::test]
async fn encrypted_fixture_state() {
    let encrypted = fixture("resolver_state_encrypted.pb");
    let fake = fake_with(encrypted.clone(), "\"enc\"").await;
    let fetcher = StateFetcher::new(SyncConfig { encryption_key: Some(fixture_key()), ..config(&fake) }).unwrap();
    assert!(fetcher.url().ends_with(".enc"));
    let update = expect_state(fetcher.fetch().await.unwrap());
    assert_eq!(update.state, fixture("resolver_state_current.pb"));
    assert_eq!(update.account, "confidence-test");
    assert_eq!(update.body, encrypted, "the body is kept as downloaded, still encrypted");
}

#[tokio::test]
async fn etag_makes_the_second_fetch_a_304_once_committed() {
    let fake = fake_with(plain_fixture_body(), "\"v1\"").await;
    let mut fetcher = StateFetcher::new(config(&fake)).unwrap();
    let update = expect_state(fetcher.fetch().await.unwrap());
    // Not committed (say the resolver rejected it): fetched in full again.
    expect_state(fetcher.fetch().await.unwrap());
    assert_eq!(fake.counters(Route::Cdn).not_modified, 0);
    fetcher.commit(update.etag);
    assert_eq!(fetcher.etag(), Some("\"v1\""));
    assert_eq!(fetcher.fetch().await.unwrap(), Fetched::NotModified);
    assert_eq!(fake.counters(Route::Cdn).not_modified, 1);
    // A new state on the server is fetched despite the stored ETag.
    fake.set_state(digest(), plain_fixture_body(), "\"v2\"");
    assert_eq!(expect_state(fetcher.fetch().await.unwrap()).etag.as_deref(), Some("\"v2\""));
}

#[tokio::test]
async fn fetch_errors_are_typed_and_readable() {
    let key_hex = String::from_utf8(fixture("encryption_key_test.hex")).unwrap();
    let fake = fake_with(plain_fixture_body(), "\"v1\"").await;
    let plain = StateFetcher::new(SyncConfig { request_timeout: Duration::from_millis(300), ..config(&fake) }).unwrap();
    let check = |error: &SyncError| {
        let text = error.to_string();
        assert!(!text.contains(SECRET) && !text.contains(&key_hex[..16]), "{text}");
    };

    type Case = (Fault, fn(&SyncError) -> bool, bool);
    let cases: Vec<Case> = vec![
        (Fault::Slow(Duration::from_secs(2)), |e| matches!(e, SyncError::Timeout(_)), true),
        (Fault::Status(503), |e| matches!(e, SyncError::Http { status: 503, retry_after: None }), true),
        (Fault::Status(500), |e| matches!(e, SyncError::Http { status: 500, .. }), true),
        (Fault::Status(408), |e| matches!(e, SyncError::Http { status: 408, .. }), true),
        (Fault::Status(403), |e| matches!(e, SyncError::Http { status: 403, .. }), false),
        (
            Fault::TooManyRequests { retry_after_secs: 2 },
            |e| *e == SyncError::Http { status: 429, retry_after: Some(Duration::from_secs(2)) },
            true,
        ),
        (Fault::Truncate, |e| matches!(e, SyncError::Body(_)), true),
        (Fault::Garbage, |e| matches!(e, SyncError::Decode(_)), false),
        (Fault::Reset, |e| matches!(e, SyncError::Network(_) | SyncError::Body(_)), true),
    ];
    for (fault, expected, retryable) in cases {
        fake.set_fault(Route::Cdn, fault.clone()).await.unwrap();
        let error = plain.fetch().await.unwrap_err();
        assert!(expected(&error), "{fault:?} gave {error:?}");
        assert_eq!(error.is_retryable(), retryable, "{fault:?}: {error}");
        check(&error);
        fake.set_fault(Route::Cdn, Fault::None).await.unwrap();
        expect_state(plain.fetch().await.unwrap());
    }
    let http = plain_error(&fake, Fault::Status(503)).await;
    assert_eq!(http.to_string(), "failed to fetch state: HTTP 503");

    // Unknown path: 404, not retried soon.
    fake.remove_state(&digest());
    let missing = plain.fetch().await.unwrap_err();
    assert_eq!(missing, SyncError::Http { status: 404, retry_after: None });
    assert!(!missing.is_retryable());
}

async fn plain_error(fake: &FakeConfidence, fault: Fault) -> SyncError {
    fake.set_fault(Route::Cdn, Fault::FailNext(1, Box::new(fault))).await.unwrap();
    StateFetcher::new(config(fake)).unwrap().fetch().await.unwrap_err()
}

#[tokio::test]
async fn encrypted_failures() {
    let encrypted = fixture("resolver_state_encrypted.pb");
    let fake = fake_with(encrypted.clone(), "\"enc\"").await;
    let wrong_key =
        StateFetcher::new(SyncConfig { encryption_key: Some(StateKey::from_bytes([9; 32])), ..config(&fake) }).unwrap();
    let error = wrong_key.fetch().await.unwrap_err();
    assert_eq!(error, SyncError::Decrypt(CryptoError::TagMismatch));
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("wrong encryption key"), "{error}");

    let right_key = StateFetcher::new(SyncConfig { encryption_key: Some(fixture_key()), ..config(&fake) }).unwrap();
    fake.set_state(digest(), encrypted[..20].to_vec(), "\"short\"");
    let error = right_key.fetch().await.unwrap_err();
    assert!(error.to_string().contains("encrypted state too short"), "{error}");
    fake.set_state(digest(), encrypted, "\"enc\"");
    fake.set_fault(Route::Cdn, Fault::Garbage).await.unwrap();
    assert_eq!(right_key.fetch().await.unwrap_err(), SyncError::Decrypt(CryptoError::TagMismatch));
    fake.set_fault(Route::Cdn, Fault::Truncate).await.unwrap();
    assert!(matches!(right_key.fetch().await.unwrap_err(), SyncError::Body(_)));
}

#[tokio::test]
async fn empty_account_is_rejected() {
    let body = ClientResolverState {
        state: fixture("resolver_state_current.pb"),
        account: String::new(),
        log_destinations: vec![],
    }
    .encode_to_vec();
    let fake = fake_with(body, "\"v1\"").await;
    let error = StateFetcher::new(config(&fake)).unwrap().fetch().await.unwrap_err();
    assert_eq!(error, SyncError::EmptyAccount);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn oversized_state_is_rejected() {
    let body = plain_fixture_body();
    let fake = fake_with(body.clone(), "\"v1\"").await;
    let limited = StateFetcher::new(SyncConfig { max_state_bytes: body.len() - 1, ..config(&fake) }).unwrap();
    assert_eq!(limited.fetch().await.unwrap_err(), SyncError::TooLarge { limit: body.len() - 1 });
    let exact = StateFetcher::new(SyncConfig { max_state_bytes: body.len(), ..config(&fake) }).unwrap();
    expect_state(exact.fetch().await.unwrap());
}

/// Without a Content-Length the limit is enforced while streaming: an endless chunked body is
/// cut off at the limit instead of being buffered.
#[tokio::test]
async fn endless_chunked_state_is_cut_at_the_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).await;
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut out = stream.write_all(head).await;
        let chunk = [b"400\r\n".as_slice(), &[7u8; 1024], b"\r\n"].concat();
        while out.is_ok() {
            out = stream.write_all(&chunk).await;
        }
    });
    let config = SyncConfig {
        cdn_base_url: format!("http://127.0.0.1:{port}/"),
        max_state_bytes: 100_000,
        ..SyncConfig::new(SECRET)
    };
    let error = within(Duration::from_secs(2), StateFetcher::new(config).unwrap().fetch()).await.unwrap_err();
    assert_eq!(error, SyncError::TooLarge { limit: 100_000 });
}

#[tokio::test]
async fn server_down_is_a_network_error() {
    let fake = fake_with(plain_fixture_body(), "\"v1\"").await;
    fake.set_fault(Route::Cdn, Fault::Down).await.unwrap();
    let fetcher = StateFetcher::new(config(&fake)).unwrap();
    let error = fetcher.fetch().await.unwrap_err();
    assert!(matches!(error, SyncError::Network(_)) && error.is_retryable(), "{error:?}");
    assert!(error.to_string().to_lowercase().contains("refused"), "the cause is in the message: {error}");
    fake.set_fault(Route::Cdn, Fault::None).await.unwrap();
    expect_state(fetcher.fetch().await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// The loop

/// Applies states by flag name, reporting flags whose definition changed; can be told to
/// reject.
#[derive(Default)]
struct TestSink {
    flags: Mutex<BTreeMap<String, Vec<u8>>>,
    applied: Mutex<Vec<String>>,
    reject: AtomicBool,
}

impl StateSink for TestSink {
    fn apply(&self, update: &StateUpdate) -> Result<Vec<String>, ApplyError> {
        if self.reject.load(Ordering::SeqCst) {
            return Err(EngineError::Resolver("resolver refused the state".into()).into());
        }
        let state = ResolverState::decode(update.state.as_slice()).map_err(|e| EngineError::Resolver(e.to_string()))?;
        let new: BTreeMap<String, Vec<u8>> = state.flags.iter().map(|f| (f.name.clone(), f.encode_to_vec())).collect();
        let mut flags = self.flags.lock().unwrap();
        let changed = new
            .keys()
            .chain(flags.keys())
            .filter(|name| new.get(*name) != flags.get(*name))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        *flags = new;
        self.applied.lock().unwrap().push(update.account.clone());
        Ok(changed)
    }
}

fn demo_body(edit: impl FnOnce(&mut ResolverState)) -> Vec<u8> {
    let mut built = state_builder::demo_state();
    edit(&mut built.proto);
    built.encode_client_resolver_state()
}

struct Running {
    status: Arc<SyncStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_loop(config: SyncConfig, sink: Arc<TestSink>, interval: Duration) -> Running {
    let status = Arc::new(SyncStatus::new());
    let (stop, shutdown) = watch::channel(false);
    let fetcher = StateFetcher::new(config).unwrap();
    let task = tokio::spawn(run_sync_loop(fetcher, sink, interval, status.clone(), shutdown));
    Running { status, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        within(Duration::from_millis(100), self.task).await.unwrap();
    }
}

#[tokio::test]
async fn loop_applies_changed_states_and_reports_flags() {
    let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
    let sink = Arc::new(TestSink::default());
    let running = start_loop(config(&fake), sink.clone(), Duration::from_millis(100));
    running.status.wait_for_first_state(Duration::from_secs(5)).await.unwrap();
    let all_flags: Vec<String> = state_builder::demo_state().flag_names();
    let snapshot = running.status.snapshot();
    assert_eq!(snapshot.updates, 1);
    assert_eq!(snapshot.etag.as_deref(), Some("\"v1\""));
    assert!(snapshot.last_success.is_some());
    let mut expected = all_flags.clone();
    expected.sort();
    assert_eq!(snapshot.changed_flags, expected);

    // Unchanged: conditional polls answered 304, nothing re-applied.
    until("two 304s", Duration::from_secs(3), || fake.counters(Route::Cdn).not_modified >= 2).await;
    assert_eq!(running.status.updates(), 1);
    assert!(running.status.snapshot().not_modified >= 2);

    // One flag removed, one edited.
    let (removed, edited) = (all_flags[0].clone(), all_flags[1].clone());
    let v2 = demo_body(|state| {
        state.flags.retain(|f| f.name != removed);
        if let Some(flag) = state.flags.iter_mut().find(|f| f.name == edited) {
            flag.rules.reverse();
            flag.rules.pop();
        }
    });
    fake.set_state(digest(), v2, "\"v2\"");
    until("the second state", Duration::from_secs(3), || running.status.updates() == 2).await;
    let snapshot = running.status.snapshot();
    let mut expected = vec![removed, edited];
    expected.sort();
    assert_eq!(snapshot.changed_flags, expected);
    assert_eq!(snapshot.etag.as_deref(), Some("\"v2\""));
    assert_eq!(snapshot.failures, 0);
    running.stop().await;
}

/// Runs the loop against a faulty server, checks the failure shows in the status with `needle`
/// in its message, then lifts the fault with `heal` and checks the loop recovers.
async fn loop_survives(
    fake: &FakeConfidence,
    config: SyncConfig,
    needle: &str,
    retryable: bool,
    heal: impl AsyncFnOnce(&FakeConfidence),
) {
    let sink = Arc::new(TestSink::default());
    let running = start_loop(config, sink.clone(), Duration::from_millis(100));
    let status = running.status.clone();
    until(&format!("a failure containing {needle:?}"), Duration::from_secs(5), || status.failures() >= 1).await;
    let error = status.last_error().unwrap();
    assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    assert_eq!(status.updates(), 0);
    // Initialization would fail now: at once if retrying soon cannot help, else at its timeout.
    match status.wait_for_first_state(Duration::from_millis(50)).await.unwrap_err() {
        FirstStateError::Failed(message) => assert!(!retryable && message.contains(needle), "{message}"),
        FirstStateError::TimedOut { last_error: Some(message), .. } => assert!(retryable && message.contains(needle)),
        other => panic!("unexpected {other:?}"),
    }
    heal(fake).await;
    until("recovery", Duration::from_secs(5), || status.has_state()).await;
    status.wait_for_first_state(Duration::ZERO).await.unwrap();
    let snapshot = status.snapshot();
    assert_eq!(snapshot.consecutive_failures, 0);
    assert_eq!(snapshot.last_error.as_deref(), Some(error.as_str()), "the last error stays visible");
    assert_eq!(sink.applied.lock().unwrap().len(), 1);
    running.stop().await;
}

async fn heal_cdn(fake: &FakeConfidence) {
    fake.set_fault(Route::Cdn, Fault::None).await.unwrap();
}

#[tokio::test]
async fn loop_recovers_from_each_fault() {
    let faults = [
        (Fault::Slow(Duration::from_secs(1)), "timed out", true),
        (Fault::Status(503), "HTTP 503", true),
        (Fault::Truncate, "incomplete", true),
        (Fault::Garbage, "decode", false),
        (Fault::Reset, "error", true),
    ];
    for (fault, needle, retryable) in faults {
        let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
        fake.set_fault(Route::Cdn, fault).await.unwrap();
        let cfg = SyncConfig { request_timeout: Duration::from_millis(250), ..config(&fake) };
        loop_survives(&fake, cfg, needle, retryable, heal_cdn).await;
    }
}

#[tokio::test]
async fn loop_recovers_from_bad_payloads() {
    // Wrong key: the server has a body encrypted for another key, then the right one.
    let plain = demo_body(|_| {});
    let fake = fake_with(encrypt_state(&StateKey::from_bytes([3; 32]), [1; 12], &plain), "\"a\"").await;
    let cfg = SyncConfig { encryption_key: Some(fixture_key()), ..config(&fake) };
    let good = encrypt_state(&fixture_key(), [2; 12], &plain);
    loop_survives(&fake, cfg, "wrong encryption key", false, async move |fake: &FakeConfidence| {
        fake.set_state(digest(), good, "\"b\"")
    })
    .await;

    // Empty account, then a valid state.
    let empty =
        ClientResolverState { account: String::new(), ..ClientResolverState::decode(plain.as_slice()).unwrap() };
    let fake = fake_with(empty.encode_to_vec(), "\"a\"").await;
    let cfg = config(&fake);
    loop_survives(&fake, cfg, "empty account", false, async |fake: &FakeConfidence| {
        fake.set_state(digest(), demo_body(|_| {}), "\"b\"")
    })
    .await;

    // Too large, then a state that fits.
    let fake = fake_with(plain_fixture_body(), "\"a\"").await;
    let cfg = SyncConfig { max_state_bytes: 100_000, ..config(&fake) };
    assert!(plain.len() < 100_000);
    loop_survives(&fake, cfg, "larger than", false, async |fake: &FakeConfidence| {
        fake.set_state(digest(), demo_body(|_| {}), "\"b\"")
    })
    .await;
}

#[tokio::test]
async fn loop_recovers_when_the_server_is_down_at_start() {
    let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
    fake.set_fault(Route::Cdn, Fault::Down).await.unwrap();
    let running = start_loop(config(&fake), Arc::new(TestSink::default()), Duration::from_millis(100));
    let early = running.status.wait_for_first_state(Duration::from_millis(400)).await.unwrap_err();
    match &early {
        FirstStateError::TimedOut { last_error: Some(error), .. } => assert!(error.contains("network"), "{error}"),
        other => panic!("expected a timeout with the last error, got {other:?}"),
    }
    assert!(early.to_string().contains("no resolver state after"), "{early}");
    until("it keeps retrying", Duration::from_secs(3), || running.status.failures() >= 2).await;
    fake.set_fault(Route::Cdn, Fault::None).await.unwrap();
    running.status.wait_for_first_state(Duration::from_secs(3)).await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn loop_honours_retry_after() {
    let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
    fake.set_fault(Route::Cdn, Fault::FailNext(1, Box::new(Fault::TooManyRequests { retry_after_secs: 1 })))
        .await
        .unwrap();
    let started = Instant::now();
    // Interval 3 s: the backoff would retry after ~500 ms; Retry-After asks for 1 s.
    let running = start_loop(config(&fake), Arc::new(TestSink::default()), Duration::from_secs(3));
    running.status.wait_for_first_state(Duration::from_secs(3)).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(950) && waited < Duration::from_millis(2500), "{waited:?}");
    assert!(running.status.last_error().unwrap().contains("HTTP 429"));
    assert_eq!(fake.counters(Route::Cdn).requests, 2);
    running.stop().await;
}

#[tokio::test]
async fn rejected_state_keeps_the_old_one_and_is_fetched_again() {
    let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
    let sink = Arc::new(TestSink::default());
    sink.reject.store(true, Ordering::SeqCst);
    let running = start_loop(config(&fake), sink.clone(), Duration::from_millis(100));
    // Initialization fails early: retrying soon would not help.
    let error = running.status.wait_for_first_state(Duration::from_secs(3)).await.unwrap_err();
    assert!(matches!(&error, FirstStateError::Failed(m) if m.contains("resolver refused the state")), "{error:?}");

    // Not committed: the next polls download it again in full (no 304).
    until("a second full download", Duration::from_secs(3), || fake.counters(Route::Cdn).requests >= 2).await;
    assert_eq!(fake.counters(Route::Cdn).not_modified, 0);
    // The server counts a request before the loop has applied (and rejected) its answer.
    until("a second rejection", Duration::from_secs(3), || running.status.failures() >= 2).await;

    sink.reject.store(false, Ordering::SeqCst);
    until("the state applied", Duration::from_secs(3), || running.status.has_state()).await;
    let applied_etag = running.status.snapshot().etag;
    assert_eq!(applied_etag.as_deref(), Some("\"v1\""));

    // A later rejected state leaves the applied one (and its ETag) in place.
    sink.reject.store(true, Ordering::SeqCst);
    let before = running.status.failures();
    fake.set_state(digest(), demo_body(|s| s.flags.truncate(1)), "\"v2\"");
    until("the v2 rejection", Duration::from_secs(3), || running.status.failures() > before).await;
    assert_eq!(running.status.snapshot().etag.as_deref(), Some("\"v1\""));
    assert_eq!(running.status.updates(), 1);
    assert_eq!(sink.flags.lock().unwrap().len(), state_builder::demo_state().flag_names().len());
    running.stop().await;
}

#[tokio::test]
async fn loop_stops_promptly() {
    // Mid-sleep (after a successful fetch, with a long interval).
    let fake = fake_with(demo_body(|_| {}), "\"v1\"").await;
    let running = start_loop(config(&fake), Arc::new(TestSink::default()), Duration::from_secs(30));
    running.status.wait_for_first_state(Duration::from_secs(3)).await.unwrap();
    running.stop().await;

    // Mid-request (the server is slow).
    fake.set_fault(Route::Cdn, Fault::Slow(Duration::from_secs(10))).await.unwrap();
    let before = fake.counters(Route::Cdn).requests;
    let running = start_loop(
        SyncConfig { request_timeout: Duration::from_secs(30), ..config(&fake) },
        Arc::new(TestSink::default()),
        Duration::from_secs(30),
    );
    until("the request to arrive", Duration::from_secs(3), || fake.counters(Route::Cdn).requests > before).await;
    let status = running.status.clone();
    running.stop().await;
    // Waiters learn that the loop is gone.
    assert_eq!(status.wait_for_first_state(Duration::from_secs(1)).await, Err(FirstStateError::Stopped));

    // Mid-backoff, stopped by dropping the sender; also via the spawn helper.
    fake.set_fault(Route::Cdn, Fault::Down).await.unwrap();
    let running = start_loop(config(&fake), Arc::new(TestSink::default()), Duration::from_secs(30));
    until("a failure", Duration::from_secs(3), || running.status.failures() >= 1).await;
    drop(running.stop);
    within(Duration::from_millis(100), running.task).await.unwrap();

    let handle =
        spawn_sync_loop(StateFetcher::new(config(&fake)).unwrap(), TestSink::default(), Duration::from_secs(30));
    until("a failure", Duration::from_secs(3), || handle.status.failures() >= 1).await;
    within(Duration::from_millis(100), handle.stop()).await;
}
