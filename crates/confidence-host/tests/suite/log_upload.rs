//! Log upload against the loopback fake Confidence: headers, destinations, retries, the
//! bounded backlog across an outage, and nothing lost or duplicated.

use std::collections::BTreeSet;
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
    LogUploader::new(client, config, Default::default()).unwrap()
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
    assert_eq!(up.stats().dropped_batches, 0);
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
    assert!(up.stats().failed_attempts >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_drops_the_oldest_batches_and_counts_them() {
    let server = FakeConfidence::start().await.unwrap();
    let e = engine();
    install_tls_provider();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    config.backlog_bytes = 16 << 10;
    let up =
        LogUploader::new(reqwest::Client::builder().no_proxy().build().unwrap(), config, Default::default()).unwrap();
    server.set_fault(Route::Logs, Fault::Status(500)).await.unwrap();
    let mut produced = 0;
    for round in 0..6 {
        up.enqueue(produce(&e, round * 40, 40));
        produced += 40;
    }
    server.set_fault(Route::Logs, Fault::None).await.unwrap();
    up.flush().await.unwrap();
    let dropped = up.stats().dropped_batches;
    assert!(dropped > 0, "the bound was exceeded");
    // Every exposure is either delivered or in a batch counted as dropped.
    let delivered = delivered_resolve_ids(&server).len();
    assert!(delivered < produced && delivered > 0, "{delivered} of {produced}");
}

/// A batch being sent is leaving: the bound neither drops it nor counts it, and it counts once,
/// as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_dropped_in_flight_that_arrives_is_counted_sent_not_dropped() {
    let server = FakeConfidence::start().await.unwrap();
    install_tls_provider();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    config.backlog_bytes = 10;
    let up = std::sync::Arc::new(
        LogUploader::new(reqwest::Client::builder().no_proxy().build().unwrap(), config, Default::default()).unwrap(),
    );
    server.set_fault(Route::Logs, Fault::FailNext(1, Box::new(Fault::Slow(Duration::from_millis(300))))).await.unwrap();
    up.enqueue([vec![1; 8]]);
    let flushing = tokio::spawn({
        let up = up.clone();
        async move { up.flush().await }
    });
    until("the first upload to be in flight", Duration::from_secs(5), || server.counters(Route::Logs).requests >= 1)
        .await;
    up.enqueue([vec![2; 8]]); // within the bound once the batch in flight is not counted
    flushing.await.unwrap().unwrap();
    up.flush().await.unwrap();
    let stats = up.stats();
    assert_eq!(server.received_logs().len(), 2);
    assert_eq!((stats.batches_enqueued, stats.batches_sent, stats.dropped_batches), (2, 2, 0));
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

/// `enqueued = sent + dropped + rejected + queued`, read at once.
fn assert_accounted(up: &LogUploader) {
    let s = up.stats();
    assert_eq!(s.batches_enqueued, s.batches_sent + s.dropped_batches + s.rejected_batches + s.queued_batches, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answered_413_is_split_until_it_fits_and_every_exposure_arrives_once() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    let batches = produce(&e, 0, 40);
    let size = batches.iter().map(Vec::len).max().unwrap();
    server.set_fault(Route::Logs, Fault::BodyOver { max_bytes: size / 5 }).await.unwrap();
    up.enqueue(batches);
    up.enqueue(produce(&e, 40, 1)); // a healthy batch behind the large one
    assert_accounted(&up);
    up.flush().await.unwrap();
    let s = up.stats();
    assert!(s.split_batches >= 3, "split down to the limit: {s:?}");
    assert_eq!((s.rejected_batches, s.dropped_batches, s.queued_batches), (0, 0, 0), "{s:?}");
    assert_accounted(&up);
    assert_eq!(delivered_resolve_ids(&server).len(), 41, "every exposure, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_malformed_is_rejected_once_and_the_queue_moves_on() {
    let server = FakeConfidence::start().await.unwrap();
    let notices = std::sync::Arc::new(confidence_host::notices::Notices::default());
    install_tls_provider();
    let mut config = UploadConfig::new(FIXTURE_SECRET);
    config.api_base_url = server.base_url();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let up = LogUploader::new(client, config, notices.clone()).unwrap();
    let e = engine();
    let mut batches = 0;
    for round in 0..4 {
        let produced = produce(&e, round * 5, 5);
        batches += produced.len() as u64;
        up.enqueue(produced);
    }
    server.set_fault(Route::Logs, Fault::FailNext(1, Box::new(Fault::Status(400)))).await.unwrap();
    assert_eq!(up.flush().await.unwrap() as u64, batches - 1, "the healthy batches behind it are sent");
    let s = up.stats();
    assert_eq!((s.batches_sent, s.rejected_batches, s.queued_batches), (batches - 1, 1, 0), "{s:?}");
    assert_accounted(&up);
    assert_eq!(server.counters(Route::Logs).requests, batches, "the refused batch was sent once, not retried");
    let warnings: Vec<_> = notices.take().into_iter().filter(|n| n.message.contains("HTTP 400")).collect();
    assert_eq!(warnings.len(), 1, "reported once: {warnings:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_entry_over_the_limit_is_rejected_and_the_next_batch_is_sent() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    server.set_fault(Route::Logs, Fault::BodyOver { max_bytes: 8 }).await.unwrap();
    up.enqueue(produce(&e, 0, 1));
    up.enqueue([vec![]]); // an empty batch fits any limit
    up.flush().await.unwrap();
    let s = up.stats();
    assert!(s.rejected_batches >= 1 && s.batches_sent >= 1 && s.queued_batches == 0, "{s:?}");
    assert_accounted(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_aborts_uploads_counts_the_undelivered_as_dropped_and_sends_nothing_after() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    server.set_fault(Route::Logs, Fault::TooManyRequests { retry_after_secs: 1 }).await.unwrap();
    let mut batches = 0;
    for round in 0..4 {
        let produced = produce(&e, round * 5, 5);
        batches += produced.len() as u64;
        up.enqueue(produced);
    }
    let up = std::sync::Arc::new(up);
    let flushing = tokio::spawn({
        let up = up.clone();
        async move { up.flush().await }
    });
    until("a first refused attempt", Duration::from_secs(5), || server.counters(Route::Logs).requests >= 1).await;
    up.close(true);
    let seen = server.counters(Route::Logs).requests;
    assert!(matches!(flushing.await.unwrap(), Err(confidence_host::log_upload::UploadError::Closed)));
    let s = up.stats();
    assert_eq!((s.batches_enqueued, s.batches_sent, s.dropped_batches, s.queued_batches), (batches, 0, batches, 0));
    assert_accounted(&up);
    // The retry was due after one second: time passing is what this waits for.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.counters(Route::Logs).requests, seen, "no request after close");
    up.enqueue(produce(&e, 20, 1));
    assert!(matches!(up.flush().await, Err(confidence_host::log_upload::UploadError::Closed)));
    assert_accounted(&up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taking_the_backlog_counts_it_as_sent() {
    let server = FakeConfidence::start().await.unwrap();
    let (e, up) = (engine(), uploader(&server));
    let produced = [produce(&e, 0, 3), produce(&e, 3, 3)].concat();
    let n = produced.len() as u64;
    up.enqueue(produced);
    assert_eq!(up.take_backlog().len() as u64, n);
    let s = up.stats();
    assert_eq!((s.batches_enqueued, s.batches_sent, s.dropped_batches), (n, n, 0), "{s:?}");
    assert_accounted(&up);
    assert_eq!(server.counters(Route::Logs).requests, 0);
}
