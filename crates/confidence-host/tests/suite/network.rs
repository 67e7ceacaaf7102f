//! Corporate networks: states and logs through a forward proxy (explicit or from the
//! environment, `NO_PROXY` honoured, credentials sent), TLS to a server whose certificate comes
//! from a private CA (trusted through the options or `NODE_EXTRA_CA_CERTS`), connect and read
//! timeouts, and the `User-Agent`. Everything runs on 127.0.0.1: the proxy maps every target
//! to the TLS front, so the test host name is never looked up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::net_support::{ForwardProxy, TestPki, TlsFront, CDN_HOST};
use confidence_host::engine::native::{NativeEngine, NativeEngineConfig};
use confidence_host::engine::Engine;
use confidence_host::http::{NetConfig, USER_AGENT};
use confidence_host::resolver_host::{HostConfig, ResolverHost};
use confidence_host::state_sync::{Fetched, StateFetcher, SyncConfig, SyncError};
use confidence_proto::admin::ClientResolverState;
use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveProcessRequest;
use fake_confidence::{secret_digest, FakeConfidence, Fault, Route};
use prost::Message;
use serde_json::json;

fn payload() -> Vec<u8> {
    ClientResolverState { state: fixture_state(), account: fixture_account(), log_destinations: vec![] }.encode_to_vec()
}

/// The fake Confidence behind a TLS front with a private CA.
struct Site {
    fake: FakeConfidence,
    front: TlsFront,
    pki: TestPki,
}

impl Site {
    async fn start() -> Site {
        let fake = FakeConfidence::start().await.unwrap();
        fake.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
        let pki = TestPki::generate();
        let upstream = format!("127.0.0.1:{}", fake.port()).parse().unwrap();
        let front = TlsFront::start(&pki, upstream).await;
        Site { fake, front, pki }
    }

    /// The https base URL under the test host name (reachable only through the proxy).
    fn named_url(&self) -> String {
        format!("https://{CDN_HOST}:{}/", self.front.addr.port())
    }

    fn localhost_url(&self) -> String {
        format!("https://localhost:{}/", self.front.addr.port())
    }
}

fn fetcher(base: String, net: NetConfig) -> Result<StateFetcher, String> {
    let config = SyncConfig {
        cdn_base_url: base,
        request_timeout: Duration::from_secs(10),
        net,
        ..SyncConfig::new(FIXTURE_SECRET)
    };
    StateFetcher::new(config).map_err(|e| e.to_string())
}

async fn fetch(base: String, net: NetConfig) -> Result<Fetched, SyncError> {
    fetcher(base, net).unwrap().fetch().await
}

fn trusting(pki: &TestPki) -> NetConfig {
    NetConfig { extra_ca_pem: vec![pki.ca_pem.clone()], ..NetConfig::default() }
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_and_logs_go_through_the_proxy_over_tls_with_a_private_ca() {
    let site = Site::start().await;
    let proxy = ForwardProxy::start(site.front.addr).await;
    let net = NetConfig {
        proxy: Some(format!("http://tunnel-user:tunnel-pass@{}", proxy.addr)),
        user_agent_prefix: Some("checkout-service/2.1".into()),
        ..trusting(&site.pki)
    };
    let mut config = HostConfig::new(FIXTURE_SECRET);
    config.sync.cdn_base_url = site.named_url();
    config.sync.net = net;
    config.upload.api_base_url = site.named_url();
    config.flush_interval = Duration::from_secs(30);
    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    let host = ResolverHost::new(engine, config).unwrap();
    host.start().unwrap();
    host.wait_ready(Duration::from_secs(5)).await.unwrap();
    for i in 0..5 {
        let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": format!("v{i}") })), true);
        host.engine().resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
    }
    assert!(host.flush().await.unwrap() >= 1);
    host.close(Duration::from_secs(2)).await.unwrap();

    let log = proxy.log();
    assert!(log.tunnels.len() >= 2, "the state and the logs were tunnelled: {log:?}");
    let target = format!("{CDN_HOST}:{}", site.front.addr.port());
    assert!(log.tunnels.iter().all(|t| *t == target), "{log:?}");
    assert_eq!(log.authorizations.len(), log.tunnels.len(), "every CONNECT carries the credentials");
    // base64("tunnel-user:tunnel-pass")
    assert!(log.authorizations.iter().all(|a| a == "Basic dHVubmVsLXVzZXI6dHVubmVsLXBhc3M="), "{log:?}");
    assert!(site.front.handshakes.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    let received = site.fake.received_logs();
    assert!(!received.is_empty());
    let agent = received[0].header("user-agent").unwrap_or_default().to_string();
    assert_eq!(agent, format!("checkout-service/2.1 {USER_AGENT}"));
    assert!(USER_AGENT.starts_with("confidence-openfeature-provider-node/0."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused_and_the_error_says_so() {
    let site = Site::start().await;
    let proxy = ForwardProxy::start(site.front.addr).await;
    let net = NetConfig { proxy: Some(proxy.url()), ..NetConfig::default() };
    let err = fetch(site.named_url(), net).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    assert_eq!(proxy.log().tunnels.len(), 1, "the tunnel was made; TLS refused the server");
    assert_eq!(site.fake.counters(Route::Cdn).requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_supplies_the_proxy_and_the_ca_and_no_proxy_bypasses() {
    let site = Site::start().await;
    let proxy = ForwardProxy::start(site.front.addr).await;
    let ca_file = std::env::temp_dir().join(format!("cf-network-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &site.pki.ca_pem).unwrap();
    let ca_path = ca_file.to_str().unwrap();
    let proxy_url = proxy.url();

    let upper = NetConfig::default().with_env(env(&[("HTTPS_PROXY", &proxy_url), ("NODE_EXTRA_CA_CERTS", ca_path)]));
    assert!(matches!(fetch(site.named_url(), upper).await, Ok(Fetched::State(_))));
    assert_eq!(proxy.log().tunnels.len(), 1);

    let lower = NetConfig::default().with_env(env(&[("https_proxy", &proxy_url), ("NODE_EXTRA_CA_CERTS", ca_path)]));
    assert!(matches!(fetch(site.named_url(), lower).await, Ok(Fetched::State(_))));
    assert_eq!(proxy.log().tunnels.len(), 2, "lower-case variables count too");

    // Loopback targets never take the environment's proxy.
    let env_only = NetConfig::default().with_env(env(&[("HTTPS_PROXY", &proxy_url), ("NODE_EXTRA_CA_CERTS", ca_path)]));
    assert!(matches!(fetch(site.localhost_url(), env_only).await, Ok(Fetched::State(_))));
    assert_eq!(proxy.log().tunnels.len(), 2);

    // An explicit proxy takes loopback too, unless NO_PROXY names the host.
    let explicit = NetConfig { proxy: Some(proxy_url.clone()), ..trusting(&site.pki) };
    assert!(matches!(fetch(site.localhost_url(), explicit.clone()).await, Ok(Fetched::State(_))));
    assert_eq!(proxy.log().tunnels.len(), 3);
    let bypass = explicit.with_env(env(&[("NO_PROXY", "example.org, localhost")]));
    assert!(matches!(fetch(site.localhost_url(), bypass).await, Ok(Fetched::State(_))));
    assert_eq!(proxy.log().tunnels.len(), 3, "NO_PROXY bypassed the proxy");

    // An unreadable NODE_EXTRA_CA_CERTS is skipped (Node itself only warns about it).
    let missing = NetConfig::default().with_env(env(&[("NODE_EXTRA_CA_CERTS", "/nonexistent/ca.pem")]));
    assert!(missing.extra_ca_pem.is_empty());
    std::fs::remove_file(&ca_file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_loopback_takes_an_explicit_proxy_as_an_absolute_form_request() {
    let fake = FakeConfidence::start().await.unwrap();
    fake.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    let proxy = ForwardProxy::start(format!("127.0.0.1:{}", fake.port()).parse().unwrap()).await;
    let net = NetConfig { proxy: Some(proxy.addr.to_string()), ..NetConfig::default() };
    assert!(matches!(fetch(fake.base_url(), net).await, Ok(Fetched::State(_))));
    let log = proxy.log();
    assert_eq!(log.forwarded.len(), 1, "{log:?}");
    assert!(log.forwarded[0].starts_with("http://127.0.0.1:"), "{log:?}");
    assert!(log.tunnels.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_never_answers_is_cut_by_the_connect_timeout() {
    let proxy = ForwardProxy::black_hole().await;
    let net =
        NetConfig { proxy: Some(proxy.url()), connect_timeout: Duration::from_millis(300), ..NetConfig::default() };
    let started = Instant::now();
    let err = fetch(format!("https://{CDN_HOST}:443/"), net).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}: {err}", started.elapsed());
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.to_string(), "timed out fetching state (connect limit 300ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_is_cut_by_the_read_timeout() {
    let fake = FakeConfidence::start().await.unwrap();
    fake.set_state(secret_digest(FIXTURE_SECRET), payload(), "\"v1\"");
    fake.set_fault(Route::Cdn, Fault::Slow(Duration::from_secs(8))).await.unwrap();
    let net = NetConfig { read_timeout: Some(Duration::from_millis(300)), ..NetConfig::default() };
    let started = Instant::now();
    let err = fetch(fake.base_url(), net).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}: {err}", started.elapsed());
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.to_string(), "timed out fetching state (read limit 300ms, request limit 10s)");
}

#[test]
fn bad_network_options_fail_at_construction_without_echoing_credentials() {
    let bad_proxy = NetConfig { proxy: Some("socks9://user:hunter2@proxy:1080".into()), ..NetConfig::default() };
    let err = bad_proxy.validate().unwrap_err();
    let err = err.to_string();
    assert!(err.contains("unsupported proxy scheme") && !err.contains("hunter2"), "{err}");
    let unparseable = NetConfig { proxy: Some("http://user:hunter2@[bad".into()), ..NetConfig::default() };
    let err = fetcher(format!("https://{CDN_HOST}/"), unparseable).unwrap_err();
    assert!(err.contains("proxy") && !err.contains("hunter2"), "{err}");
    let bad_ca = NetConfig { extra_ca_pem: vec!["not a certificate".into()], ..NetConfig::default() };
    assert!(bad_ca.validate().unwrap_err().to_string().starts_with("caCertificates: bundle #1 "));
    let debug = format!("{:?}", NetConfig { proxy: Some("http://u:hunter2@p:1".into()), ..NetConfig::default() });
    assert!(!debug.contains("hunter2"), "{debug}");
}

/// A loopback server that answers every request with `302 Location: <location>` and counts
/// the requests it saw.
async fn redirecting(location: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 64 << 10];
                let _ = stream.read(&mut head).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_refused_for_states_and_logs() {
    // The would-be collector: a second loopback origin (another port) that must see nothing.
    let (collector, collected) = redirecting("http://127.0.0.1:9/".into()).await;
    let (base, _) = redirecting(format!("{collector}v1/clientFlagLogs:write")).await;

    let err = fetch(base.clone(), NetConfig::default()).await.unwrap_err();
    assert!(err.to_string().contains("another origin"), "{err}");

    let mut config = host_config(&base);
    config.upload.max_attempts = 1;
    config.offline = false;
    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    engine.load_state(&set_state_request(fixture_state(), &fixture_account())).unwrap();
    let host = ResolverHost::new(engine, config).unwrap();
    let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": "v" })), true);
    host.engine().resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
    let err = host.flush().await.unwrap_err();
    assert!(err.to_string().contains("another origin"), "{err}");
    assert_eq!(collected.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the other origin");
    host.close(Duration::from_secs(1)).await.ok();
}

#[test]
fn plain_http_is_refused_for_every_url_but_loopback_literals_and_localhost() {
    use confidence_host::http::require_secure;
    let url = |u: &str| reqwest::Url::parse(u).unwrap();
    for ok in
        ["https://x.example/", "http://127.0.0.1:8/", "http://127.3.4.5/", "http://[::1]:80/", "http://localhost/"]
    {
        assert!(require_secure(&url(ok)).is_ok(), "{ok}");
    }
    for bad in
        ["http://127.attacker.example/", "http://127.0.0.1.nip.io/", "http://10.0.0.1/", "http://localhost.example/"]
    {
        assert!(require_secure(&url(bad)).is_err(), "{bad}");
    }
    let mut config = HostConfig::new(FIXTURE_SECRET);
    config.upload.api_base_url = "http://127.0.0.1.nip.io/".into();
    let engine: Arc<dyn Engine> = Arc::new(NativeEngine::new(NativeEngineConfig::default()).unwrap());
    let err = ResolverHost::new(engine, config).err().expect("refused");
    assert!(err.to_string().contains("plain http is allowed only to loopback"), "{err}");
}
