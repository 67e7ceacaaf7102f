//! The remote materialization store client against the loopback fake Confidence: writes read
//! back, segment inclusion, retries on 5xx, bounded time on a slow store, no retry on 4xx, the
//! `Authorization` header, and no secret in any error.
use std::time::{Duration, Instant};

use confidence_host::http::{NetConfig, PostError};
use confidence_host::remote_store::{RemoteStore, StoreError};
use confidence_resolver::proto::confidence::flags::resolver::v1::MaterializationRecord;
use fake_confidence::{FakeConfidence, Fault, Route};

const SECRET: &str = "store-secret-do-not-print";

fn record(unit: &str, materialization: &str, rule: &str, variant: &str) -> MaterializationRecord {
    MaterializationRecord {
        unit: unit.into(),
        materialization: materialization.into(),
        rule: rule.into(),
        variant: variant.into(),
    }
}

async fn setup() -> (FakeConfidence, RemoteStore) {
    let fake = FakeConfidence::start().await.unwrap();
    let store = RemoteStore::new(&fake.base_url(), SECRET, &NetConfig::default()).unwrap();
    (fake, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_assignment_is_read_back_and_segments_answer_membership() {
    let (fake, store) = setup().await;
    let queries = [record("u1", "sticky", "flags/f/rules/r", ""), record("u1", "beta-users", "", "")];
    assert_eq!(store.read(&queries).await.unwrap(), [], "nothing stored yet");

    store.write(&[record("u1", "sticky", "flags/f/rules/r", "flags/f/variants/on")]).await.unwrap();
    fake.store_include("beta-users", "u1");
    assert_eq!(
        store.read(&queries).await.unwrap(),
        [record("u1", "sticky", "flags/f/rules/r", "flags/f/variants/on"), record("u1", "beta-users", "", "")]
    );
    assert_eq!(
        fake.store_variants(),
        [("sticky".into(), "u1".into(), "flags/f/rules/r".into(), "flags/f/variants/on".into())]
    );
    // Empty reads and writes never reach the network.
    let requests = fake.counters(Route::Store).requests;
    assert_eq!(store.read(&[]).await.unwrap(), []);
    store.write(&[]).await.unwrap();
    assert_eq!(fake.counters(Route::Store).requests, requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_client_errors_are_not() {
    let (fake, store) = setup().await;
    fake.set_fault(Route::Store, Fault::FailNext(2, Box::new(Fault::Status(503)))).await.unwrap();
    store.write(&[record("u", "m", "r", "v")]).await.expect("the third attempt succeeds");
    assert_eq!(fake.counters(Route::Store).requests, 3);

    fake.reset_counters();
    fake.set_fault(Route::Store, Fault::Status(400)).await.unwrap();
    let err = store.read(&[record("u", "m", "r", "")]).await.unwrap_err();
    assert_eq!(err, StoreError::Request(PostError::Http(400)));
    assert_eq!(fake.counters(Route::Store).requests, 1, "a 400 is not retried");

    fake.reset_counters();
    fake.set_fault(Route::Store, Fault::Reset).await.unwrap();
    assert!(store.read(&[record("u", "m", "r", "")]).await.is_err());
    assert_eq!(fake.counters(Route::Store).requests, 3, "three attempts in all");

    fake.set_fault(Route::Store, Fault::Garbage).await.unwrap();
    let err = store.read(&[record("u", "m", "r", "")]).await.unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_fails_within_three_half_second_attempts() {
    let (fake, store) = setup().await;
    fake.set_fault(Route::Store, Fault::Slow(Duration::from_secs(5))).await.unwrap();
    let started = Instant::now();
    let err = store.read(&[record("u", "m", "r", "")]).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, StoreError::Request(PostError::Timeout));
    // 3 × 0.5 s plus two backoffs of ~0.1 and ~0.2 s.
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_millis(3000), "took {took:?}");
    assert_eq!(fake.counters(Route::Store).requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_authorizes_requests_and_never_appears_in_errors() {
    let (fake, _) = setup().await;
    // The fake refuses requests without a `ClientSecret` authorization.
    let anonymous = RemoteStore::new(&fake.base_url(), "", &NetConfig::default()).unwrap();
    assert_eq!(
        anonymous.read(&[record("u", "m", "r", "")]).await.unwrap_err(),
        StoreError::Request(PostError::Http(401))
    );
    let bad = RemoteStore::new(&fake.base_url(), "line\nbreak-secret", &NetConfig::default()).err().unwrap();
    assert!(!bad.to_string().contains("break-secret"), "{bad}");

    let (fake, store) = setup().await;
    for fault in [Fault::Status(503), Fault::Reset, Fault::Garbage, Fault::Status(403)] {
        fake.set_fault(Route::Store, fault).await.unwrap();
        let err = store.read(&[record("u", "m", "r", "")]).await.unwrap_err().to_string();
        assert!(!err.contains(SECRET), "{err}");
    }
}
