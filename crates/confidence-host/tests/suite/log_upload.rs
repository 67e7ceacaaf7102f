//! Log upload against the loopback fake Confidence: headers, destinations, retries, the
//! bounded backlog across an outage, and nothing lost or duplicated.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::*;
use confidence_host::crypto::install_tls_provider;
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::Engine;
use confidence_host::log_upload::{LogUploader, UploadConfig};
use confidence_resolver::proto::confidence::flags::resolver::v1::{ResolveProcessRequest, WriteFlagLogsRequest};
use fake_confidence::{FakeConfidence, Fault, Route};
use prost::Message;
use serde_json::json;

fn engine() -> WasmEngine {
    let e = WasmEngine::new(ours().clone(), WasmEngineConfig::default()).unwrap();
    e.load_state(&set_state_request(fixture_state(), &fixture_account())).unwrap();
    e
}

/// `n` applied resolves of every flag; returns the batches a flush produces.
fn produce(e: &WasmEngine, from: usize, n: usize) -> Vec<Vec<u8>> {
    for i in from..from + n {
        let req = request(FIXTURE_SECRET, &[], to_struct(&json!({ "visitor_id": format!("v{i}") })), true);
        e.resolve(ResolveProcessRequest::without_materializations(req)).unwrap();
    }
    e.flush_logs()
}

fn uploader(server: &FakeConfidence) -> LogUploader {
    install_tls_provider();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    config.cloudflare_base_url = server.base_url();
    config.request_timeout = Duration::from_secs(2);
    LogUploader::new(client, config).unwrap()
}

/// Resolve ids of every exposure the server accepted, asserting none arrived twice.
fn delivered_resolve_ids(server: &FakeConfidence) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for log in server.received_logs() {
        let batch = WriteFlagLogsRequest::decode(log.body.as_slice()).expect("a WriteFlagLogsRequest");
        for event in batch.flag_assigned {
            assert!(ids.insert(event.resolve_id.clone()), "exposure {} delivered twice", event.resolve_id);
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_as_the_guest_produced_them_with_the_protocol_headers() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    let batches = produce(&e, 0, 25);
    up.enqueue(batches.clone());
    assert_eq!(up.flush().await.unwrap(), batches.len());
    let logs = server.received_logs();
    assert_eq!(logs.iter().map(|l| l.body.clone()).collect::<Vec<_>>(), batches, "bytes unchanged, in order");
    assert_eq!(logs[0].path, "/v1/clientFlagLogs:write");
    assert_eq!(logs[0].header("authorization"), Some(format!("ClientSecret {FIXTURE_SECRET}").as_str()));
    assert_eq!(logs[0].header("content-type"), Some("application/x-protobuf"));
    assert_eq!(delivered_resolve_ids(&server).len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_the_backlog_loses_and_duplicates_nothing() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    server.set_fault(Route::Logs, Fault::Status(503)).await.unwrap();
    let mut produced = 0;
    for round in 0..4 {
        up.enqueue(produce(&e, round * 30, 30));
        produced += 30;
        assert!(up.flush().await.is_err(), "the endpoint is down");
    }
    assert!(up.backlog_len() >= 4);
    server.set_fault(Route::Logs, Fault::None).await.unwrap();
    up.enqueue(produce(&e, produced, 10));
    produced += 10;
    up.flush().await.unwrap();
    assert_eq!(up.backlog_len(), 0);
    assert_eq!(delivered_resolve_ids(&server).len(), produced);
    assert_eq!(up.stats.dropped_batches.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_429_are_retried_honouring_retry_after() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    server.set_fault(Route::Logs, Fault::FailNext(1, Box::new(Fault::Reset))).await.unwrap();
    up.enqueue(produce(&e, 0, 5));
    up.flush().await.unwrap();
    server
        .set_fault(Route::Logs, Fault::FailNext(1, Box::new(Fault::TooManyRequests { retry_after_secs: 1 })))
        .await
        .unwrap();
    up.enqueue(produce(&e, 5, 5));
    let start = Instant::now();
    up.flush().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(900), "Retry-After: 1 was honoured ({:?})", start.elapsed());
    assert_eq!(delivered_resolve_ids(&server).len(), 10);
    assert!(up.stats.failed_attempts.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_drops_the_oldest_batches_and_counts_them() {
    let server = FakeConfidence::start().await.unwrap();
    let e = engine();
    install_tls_provider();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    config.backlog_bytes = 16 << 10;
    let up = LogUploader::new(reqwest::Client::builder().no_proxy().build().unwrap(), config).unwrap();
    server.set_fault(Route::Logs, Fault::Status(500)).await.unwrap();
    let mut produced = 0;
    for round in 0..6 {
        up.enqueue(produce(&e, round * 40, 40));
        produced += 40;
    }
    server.set_fault(Route::Logs, Fault::None).await.unwrap();
    up.flush().await.unwrap();
    let dropped = up.stats.dropped_batches.load(Ordering::Relaxed);
    assert!(dropped > 0, "the bound was exceeded");
    // Every exposure is either delivered or in a batch counted as dropped.
    let delivered = delivered_resolve_ids(&server).len();
    assert!(delivered < produced && delivered > 0, "{delivered} of {produced}");
}

/// A batch the bound drops while it is being sent, and that arrives, counts once: as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_in_flight_that_arrives_is_counted_sent_not_dropped() {
    let server = FakeConfidence::start().await.unwrap();
    install_tls_provider();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    config.backlog_bytes = 10;
    let up =
        std::sync::Arc::new(LogUploader::new(reqwest::Client::builder().no_proxy().build().unwrap(), config).unwrap());
    server.set_fault(Route::Logs, Fault::FailNext(1, Box::new(Fault::Slow(Duration::from_millis(300))))).await.unwrap();
    up.enqueue([vec![1; 8]]);
    let flushing = tokio::spawn({
        let up = up.clone();
        async move { up.flush().await }
    });
    until("the first upload to be in flight", Duration::from_secs(5), || server.counters(Route::Logs).requests >= 1)
        .await;
    up.enqueue([vec![2; 8]]); // over the bound: the batch in flight is the oldest, dropped
    flushing.await.unwrap().unwrap();
    up.flush().await.unwrap();
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    assert_eq!(server.received_logs().len(), 2);
    assert_eq!(
        (stat(&up.stats.batches_enqueued), stat(&up.stats.batches_sent), stat(&up.stats.dropped_batches)),
        (2, 2, 0)
    );
    assert_eq!(up.backlog_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudflare_destination_wraps_the_batch_with_the_account() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    up.set_route(&[2], "acct-1");
    let batches = produce(&e, 0, 3);
    up.enqueue(batches.clone());
    up.flush().await.unwrap();
    let log = &server.received_logs()[0];
    assert_eq!(log.path, "/v1/flagLogs:ingest");
    let mut expected = vec![0x0a, 6];
    expected.extend_from_slice(b"acct-1");
    expected.push(0x12);
    prost::encoding::encode_varint(batches[0].len() as u64, &mut expected);
    expected.extend_from_slice(&batches[0]);
    assert_eq!(log.body, expected);
}
