//! The server end to end, driven by a raw TCP client so faults are visible byte for byte.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const DIGEST: &str = "4f16fdeb84f9ef7b2b0127ed4b2c255dd82e2ac7b56c441c9c9fce8991a76207";

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes and reads until the server closes.
async fn exchange(port: u16, raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(raw).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(out)
}

fn parse(raw: &[u8]) -> Response {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("complete head") + 4;
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Response { status, headers, body: raw[end..].to_vec() }
}

async fn get(port: u16, path: &str, if_none_match: Option<&str>) -> Response {
    let extra = if_none_match.map(|e| format!("If-None-Match: {e}\r\n")).unwrap_or_default();
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    parse(&exchange(port, raw.as_bytes()).await.unwrap())
}

async fn post(port: u16, path: &str, body: &[u8]) -> Response {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: ClientSecret s3cret\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    parse(&exchange(port, &raw).await.unwrap())
}

async fn started() -> FakeConfidence {
    let fake = FakeConfidence::start().await.unwrap();
    fake.set_state(DIGEST, b"state-v1".to_vec(), "\"v1\"");
    fake
}

#[tokio::test]
async fn serves_state_with_etags() {
    let fake = started().await;
    let port = fake.port();
    assert_eq!(fake.base_url(), format!("http://127.0.0.1:{port}/"));

    let first = get(port, &format!("/{DIGEST}"), None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"state-v1");
    assert_eq!(first.header("etag"), Some("\"v1\""));
    assert_eq!(first.header("connection"), Some("close"));

    let encrypted_path = get(port, &format!("/{DIGEST}.enc"), Some("\"v0\"")).await;
    assert_eq!(encrypted_path.status, 200);

    let again = get(port, &format!("/{DIGEST}"), Some("\"v1\"")).await;
    assert_eq!((again.status, again.body.len()), (304, 0));
    assert_eq!(get(port, &format!("/{DIGEST}"), Some("W/\"v1\", \"x\"")).await.status, 304);
    assert_eq!(get(port, "/unknown", None).await.status, 404);

    fake.set_state(DIGEST, b"state-v2".to_vec(), "");
    let no_etag = get(port, &format!("/{DIGEST}"), Some("\"v1\"")).await;
    assert_eq!((no_etag.status, no_etag.header("etag")), (200, None));
    fake.remove_state(DIGEST);
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 404);

    assert_eq!(fake.counters(Route::Cdn), Counters { requests: 7, not_modified: 2, faults_injected: 0 });
}

#[tokio::test]
async fn stores_log_uploads() {
    let fake = started().await;
    let port = fake.port();
    let write = post(port, LOG_WRITE_PATH, b"\x0a\x02hi").await;
    assert_eq!((write.status, write.body.len()), (200, 0));
    assert_eq!(post(port, LOG_INGEST_PATH, b"batch").await.status, 200);
    assert_eq!(post(port, "/v1/other", b"x").await.status, 404);
    assert_eq!(get(port, LOG_WRITE_PATH, None).await.status, 405);

    let logs = fake.received_logs();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].path, LOG_WRITE_PATH);
    assert_eq!(logs[0].body, b"\x0a\x02hi");
    assert_eq!(logs[0].header("authorization"), Some("ClientSecret s3cret"));
    assert_eq!(logs[1].path, LOG_INGEST_PATH);
    assert_eq!(fake.counters(Route::Logs).requests, 3);
    fake.clear_logs();
    assert!(fake.received_logs().is_empty());
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let fake = started().await;
    let raw = exchange(fake.port(), b"BROKEN\r\n\r\n").await.unwrap();
    assert_eq!(parse(&raw).status, 400);
    assert_eq!(fake.counters(Route::Cdn).requests, 0);
}

#[tokio::test]
async fn status_and_429_faults() {
    let fake = started().await;
    let port = fake.port();
    fake.set_fault(Route::Cdn, Fault::Status(503)).await.unwrap();
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 503);
    fake.set_fault(Route::Cdn, Fault::TooManyRequests { retry_after_secs: 7 }).await.unwrap();
    let limited = get(port, &format!("/{DIGEST}"), None).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("7")));
    fake.set_fault(Route::Logs, Fault::Status(500)).await.unwrap();
    assert_eq!(post(port, LOG_WRITE_PATH, b"x").await.status, 500);
    assert!(fake.received_logs().is_empty(), "a faulted upload is not accepted");
    assert_eq!(fake.counters(Route::Cdn).faults_injected, 2);
    assert_eq!(fake.counters(Route::Logs).faults_injected, 1);
}

#[tokio::test]
async fn slow_fault_delays_then_serves() {
    let fake = started().await;
    fake.set_fault(Route::Cdn, Fault::Slow(Duration::from_millis(300))).await.unwrap();
    let started_at = Instant::now();
    let response = get(fake.port(), &format!("/{DIGEST}"), None).await;
    assert!(started_at.elapsed() >= Duration::from_millis(300));
    assert_eq!((response.status, response.body.as_slice()), (200, &b"state-v1"[..]));
}

#[tokio::test]
async fn truncate_sends_half_the_declared_body() {
    let fake = started().await;
    fake.set_fault(Route::Cdn, Fault::Truncate).await.unwrap();
    // Even a conditional request that would get a 304 receives the cut 200.
    let response = get(fake.port(), &format!("/{DIGEST}"), Some("\"v1\"")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("8"));
    assert_eq!(response.body, b"stat");
}

#[tokio::test]
async fn garbage_is_random_but_never_valid_protobuf() {
    let fake = started().await;
    fake.set_fault(Route::Cdn, Fault::Garbage).await.unwrap();
    let a = get(fake.port(), &format!("/{DIGEST}"), None).await;
    let b = get(fake.port(), &format!("/{DIGEST}"), None).await;
    assert_eq!((a.status, a.body.len(), a.body[0]), (200, 1024, 0));
    assert_ne!(a.body, b.body);
}

#[tokio::test]
async fn reset_sends_no_response() {
    let fake = started().await;
    fake.set_fault(Route::Cdn, Fault::Reset).await.unwrap();
    let raw = format!("GET /{DIGEST} HTTP/1.1\r\n\r\n");
    match exchange(fake.port(), raw.as_bytes()).await {
        Ok(bytes) => assert!(bytes.is_empty(), "got {bytes:?}"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    assert_eq!(fake.counters(Route::Cdn).faults_injected, 1);
}

#[tokio::test]
async fn down_refuses_connections_until_cleared_on_the_same_port() {
    let fake = started().await;
    let port = fake.port();
    fake.set_fault(Route::Cdn, Fault::Down).await.unwrap();
    let refused = TcpStream::connect(("127.0.0.1", port)).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    // Still down while any route says so.
    fake.set_fault(Route::Logs, Fault::None).await.unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    fake.set_fault(Route::Cdn, Fault::None).await.unwrap();
    assert_eq!(fake.port(), port);
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 200);
}

#[tokio::test]
async fn fail_next_applies_n_times() {
    let fake = started().await;
    let port = fake.port();
    fake.set_fault(Route::Cdn, Fault::FailNext(2, Box::new(Fault::Status(500)))).await.unwrap();
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 500);
    assert_eq!(fake.fault(Route::Cdn), Fault::FailNext(1, Box::new(Fault::Status(500))));
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 500);
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 200);
    assert_eq!(fake.fault(Route::Cdn), Fault::None);
    assert_eq!(fake.counters(Route::Cdn), Counters { requests: 3, not_modified: 0, faults_injected: 2 });

    // Down cannot be per-request; inside FailNext it resets the connection.
    fake.set_fault(Route::Cdn, Fault::FailNext(1, Box::new(Fault::Down))).await.unwrap();
    let raw = format!("GET /{DIGEST} HTTP/1.1\r\n\r\n");
    assert!(exchange(port, raw.as_bytes()).await.map(|b| b.is_empty()).unwrap_or(true));
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 200);
}

async fn control(port: u16, command: Value) -> (u16, Value) {
    let response = post(port, CONTROL_PATH, command.to_string().as_bytes()).await;
    (response.status, serde_json::from_slice(&response.body).unwrap())
}

#[tokio::test]
async fn control_protocol() {
    let fake = FakeConfidence::start_with(Options { port: 0, control: true }).await.unwrap();
    let port = fake.port();
    assert_eq!(control(port, json!({"cmd": "ping"})).await, (200, json!({"ok": true})));

    let set = json!({"cmd": "set_state", "secret": "my-client-secret", "base64": "aGVsbG8=", "etag": "\"e1\""});
    assert_eq!(control(port, set).await.0, 200);
    let served = get(port, &format!("/{DIGEST}.enc"), None).await;
    assert_eq!((served.body.as_slice(), served.header("etag")), (&b"hello"[..], Some("\"e1\"")));
    assert_eq!(get(port, &format!("/{DIGEST}"), Some("\"e1\"")).await.status, 304);

    let fault = json!({"cmd": "set_fault", "route": "cdn", "fault": {"type": "fail_next", "n": 1, "fault": {"type": "status", "code": 502}}});
    assert_eq!(control(port, fault).await.0, 200);
    assert_eq!(get(port, &format!("/{DIGEST}"), None).await.status, 502);

    post(port, LOG_INGEST_PATH, b"\x01\x02\x03").await;
    let (_, logs) = control(port, json!({"cmd": "logs"})).await;
    assert_eq!(logs["logs"][0]["path"], LOG_INGEST_PATH);
    assert_eq!(logs["logs"][0]["body"], "AQID");
    assert_eq!(logs["logs"][0]["headers"]["authorization"], "ClientSecret s3cret");

    let (_, counters) = control(port, json!({"cmd": "counters"})).await;
    assert_eq!(counters["cdn"], json!({"requests": 3, "not_modified": 1, "faults_injected": 1}));
    assert_eq!(counters["logs"]["requests"], 1);

    let (status, error) = control(port, json!({"cmd": "set_fault", "route": "dns", "fault": "none"})).await;
    assert_eq!((status, error["ok"].clone()), (400, json!(false)));
    assert!(error["error"].as_str().unwrap().contains("unknown route"));
    assert_eq!(control(port, json!({"cmd": "set_state", "digest": "x"})).await.0, 400);
    assert_eq!(control(port, json!({"cmd": "reset"})).await.0, 200);
    assert!(fake.received_logs().is_empty());

    // Down over the control channel comes back by itself.
    let down = json!({"cmd": "set_fault", "route": "cdn", "fault": {"type": "down", "for_ms": 300}});
    assert_eq!(control(port, down).await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(control(port, json!({"cmd": "ping"})).await.0, 200);
}

#[tokio::test]
async fn control_is_off_by_default() {
    let fake = FakeConfidence::start().await.unwrap();
    assert_eq!(post(fake.port(), CONTROL_PATH, b"{\"cmd\":\"ping\"}").await.status, 404);
}

#[test]
fn secret_digest_matches_the_spec_example() {
    assert_eq!(secret_digest("my-client-secret"), DIGEST);
}
