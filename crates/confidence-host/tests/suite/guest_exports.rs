//! Our guest driven through every export of the ABI (docs/guest-abi.md) in wasmtime.

use crate::common::*;
use confidence_host::guest::{Clock, Export, GuestError};
use confidence_proto::{InitThreadRequest, PrometheusSnapshotRequest, PrometheusSnapshotResponse, Void};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    events::flag_assigned::applied_flag::Assignment, AppliedFlag, ApplyFlagsRequest, RegisterResolveRequest,
    ResolveReason, WriteFlagLogsRequest,
};
use confidence_resolver::proto::google::Timestamp;
use prost::Message;
use serde_json::json;

const FT2: &str = "flags/fallthrough-test-2";
/// Size of Confidence's released binary (Python provider 0.15.3): ours must not be larger.
const OFFICIAL_SIZE: u64 = 516_067;

fn visitor(i: usize) -> confidence_resolver::proto::google::Struct {
    to_struct(&json!({ "visitor_id": format!("visitor-{i}"), "country": "SE" }))
}

#[test]
fn module_has_the_abi_and_fits_the_size_budget() {
    assert_eq!(ours().imports(), vec![("wasm_msg".to_string(), "wasm_msg_host_current_time".to_string())]);
    for export in Export::ALL {
        assert!(ours().has_export(export), "missing {}", export.name());
    }
    let size = std::fs::metadata(our_wasm_path()).unwrap().len();
    assert!(size <= OFFICIAL_SIZE, "guest is {size} bytes, budget {OFFICIAL_SIZE}");
}

#[test]
fn resolving_before_a_state_is_an_error_not_a_trap() {
    let mut g = instance(ours(), Clock::System);
    let err = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), false)).unwrap_err();
    assert!(matches!(&err, GuestError::Resolver(m) if m == "Resolver state not set"), "{err}");
    // ...and the instance still serves once a state arrives.
    g.call::<Void>(Export::SetResolverState, Some(&set_state_request(fixture_state(), &fixture_account()))).unwrap();
    assert_eq!(resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), false)).unwrap().resolved_flags.len(), 1);
}

#[test]
fn flushed_logs_count_what_was_resolved() {
    let mut g = fixture_guest(ours());
    let n = 50;
    let mut variants = std::collections::BTreeMap::<String, i64>::new();
    for i in 0..n {
        let resp = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(i), true)).unwrap();
        assert_eq!(resp.resolved_flags.len(), 1);
        assert!(resp.resolve_token.is_empty(), "apply=true mints no token");
        *variants.entry(resp.resolved_flags[0].variant.clone()).or_default() += 1;
        let reason = resp.resolved_flags[0].reason;
        g.call::<Void>(Export::RegisterResolve, Some(&RegisterResolveRequest { reason, latency_us: 250 })).unwrap();
    }
    let logs: WriteFlagLogsRequest = flush_logs(&mut g);

    let info = logs.flag_resolve_info.iter().find(|f| f.flag == FT2).expect("resolve info for the flag");
    let counted: std::collections::BTreeMap<String, i64> =
        info.variant_resolve_info.iter().map(|v| (v.variant.clone(), v.count)).collect();
    assert_eq!(counted, variants);
    assert_eq!(logs.client_resolve_info.len(), 1);
    let client = &logs.client_resolve_info[0];
    assert_eq!(client.client, "clients/cqzy4juldrvnz0z1uedj");
    assert!(!client.schema.is_empty());

    assert_eq!(logs.flag_assigned.len(), n, "one FlagAssigned per apply=true resolve");
    let applied: usize = logs.flag_assigned.iter().map(|e| e.flags.len()).sum();
    assert_eq!(applied as i64, variants.iter().filter(|(v, _)| !v.is_empty()).map(|(_, n)| n).sum::<i64>());
    let event = logs.flag_assigned.iter().find(|e| !e.flags.is_empty()).expect("an applied flag");
    assert_eq!(event.client_info.as_ref().unwrap().sdk, Some(sdk()));
    assert_eq!(event.resolve_id.len(), 32);
    assert_eq!(event.flags[0].apply_time, Some(ORACLE_TIME));

    let t = logs.telemetry_data.expect("telemetry in every full flush");
    assert_eq!(t.sdk, Some(sdk()));
    assert_eq!(t.resolver_version, "0.26.1");
    let latency = t.resolve_latency.expect("latency recorded");
    assert_eq!((latency.count, latency.sum), (n as u32, 250 * n as u32));
    assert_eq!(t.resolve_rate.iter().map(|r| r.count).sum::<u32>(), n as u32);
    assert!(t.memory_bytes >= 18 * 65_536);

    // Each resolve is counted in exactly one flush.
    let again = flush_logs(&mut g);
    assert!(
        again.flag_resolve_info.is_empty() && again.client_resolve_info.is_empty() && again.flag_assigned.is_empty()
    );
    assert!(again.telemetry_data.unwrap().resolve_latency.is_none());
}

#[test]
fn deferred_apply_logs_the_exposure_with_skew_adjusted_time() {
    let mut g = fixture_guest(ours());
    let resp = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(7), false)).unwrap();
    assert!(!resp.resolve_token.is_empty(), "apply=false mints a token");
    assert!(flush_logs(&mut g).flag_assigned.is_empty(), "nothing applied yet");

    let sent = Timestamp { seconds: ORACLE_TIME.seconds + 100, nanos: 0 };
    let applied = Timestamp { seconds: ORACLE_TIME.seconds + 97, nanos: 0 };
    let apply = ApplyFlagsRequest {
        flags: vec![AppliedFlag { flag: FT2.into(), apply_time: Some(applied) }],
        client_secret: FIXTURE_SECRET.into(),
        resolve_token: resp.resolve_token.clone(),
        send_time: Some(sent),
        sdk: Some(sdk()),
    };
    g.call::<Void>(Export::ApplyFlags, Some(&apply)).unwrap();
    let logs = flush_logs(&mut g);
    assert_eq!(logs.flag_assigned.len(), 1);
    let event = &logs.flag_assigned[0];
    assert_eq!(event.resolve_id, resp.resolve_id);
    // receive (ORACLE_TIME) - (sent - applied) = ORACLE_TIME - 3 s
    assert_eq!(event.flags[0].apply_time, Some(Timestamp { seconds: ORACLE_TIME.seconds - 3, nanos: 0 }));
    assert!(matches!(event.flags[0].assignment, Some(Assignment::AssignmentInfo(_))));

    // A flag that is not in the token is refused, with nothing logged.
    let mut wrong = apply.clone();
    wrong.flags[0].flag = "flags/tutorial-feature".into();
    let err = g.call::<Void>(Export::ApplyFlags, Some(&wrong)).unwrap_err();
    assert!(err.to_string().starts_with("apply_flags: "), "{err}");
    assert!(flush_logs(&mut g).flag_assigned.is_empty());
}

#[test]
fn bounded_flush_assign_drains_in_4_mib_batches_and_nothing_is_lost() {
    let mut g = fixture_guest(ours());
    let resolves = 12_000;
    for i in 0..resolves {
        resolve(&mut g, request(FIXTURE_SECRET, &[], visitor(i), true)).unwrap();
    }
    let mut events = 0;
    let mut batches = 0;
    loop {
        let batch: WriteFlagLogsRequest = g.call(Export::BoundedFlushAssign, None).unwrap();
        if batch.flag_assigned.is_empty() {
            break;
        }
        assert!(batch.encoded_len() <= 4 * 1024 * 1024, "batch of {} bytes", batch.encoded_len());
        assert!(batch.encoded_len() > 3 * 1024 * 1024, "assign flush waits for a full batch");
        events += batch.flag_assigned.len();
        batches += 1;
    }
    assert!(batches >= 1, "{resolves} resolves should fill at least one 4 MiB batch");
    // The remainder leaves with the next full flush.
    let rest = flush_logs(&mut g);
    events += rest.flag_assigned.len();
    assert_eq!(events, resolves);
    // The deprecated unbounded flush still answers.
    let _: WriteFlagLogsRequest = g.call(Export::FlushLogs, Some(&Void {})).unwrap();
}

#[test]
fn prometheus_snapshot_is_cumulative_text() {
    let mut g = fixture_guest(ours());
    for latency_us in [10, 100, 1000] {
        let r = RegisterResolveRequest { reason: ResolveReason::Match as i32, latency_us };
        g.call::<Void>(Export::RegisterResolve, Some(&r)).unwrap();
    }
    flush_logs(&mut g); // flushes do not reset the cumulative view
    let req = PrometheusSnapshotRequest { instance: "t1".into(), ..Default::default() };
    let text = g.call::<PrometheusSnapshotResponse>(Export::PrometheusSnapshot, Some(&req)).unwrap().text;
    assert!(text.contains(r#"confidence_resolves_total{resolver_id="t1",reason="RESOLVE_REASON_MATCH"} 3"#), "{text}");
    assert!(text.contains(r#"confidence_resolve_latency_microseconds_count{resolver_id="t1"} 3"#), "{text}");
    assert!(text.contains("confidence_memory_bytes"), "{text}");
    let om = PrometheusSnapshotRequest { instance: "t1".into(), openmetrics: true, buckets_per_decade: 3 };
    let text = g.call::<PrometheusSnapshotResponse>(Export::PrometheusSnapshot, Some(&om)).unwrap().text;
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[test]
fn init_thread_makes_resolve_ids_follow_the_seed() {
    let id = |seed: Option<u64>| {
        let mut g = fixture_guest(ours());
        if let Some(rng_seed) = seed {
            g.call::<Void>(Export::InitThread, Some(&InitThreadRequest { rng_seed })).unwrap();
        }
        resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), false)).unwrap().resolve_id
    };
    assert_eq!(id(Some(1)), id(Some(1)));
    assert_ne!(id(Some(1)), id(Some(2)));
    assert_eq!(id(Some(1)).len(), 32);
}

#[test]
fn null_and_empty_requests_mean_the_default_message() {
    let mut g = fixture_guest(ours());
    let a = g.call_raw(Export::BoundedFlushLogs, None).unwrap();
    let b = g.call_raw(Export::BoundedFlushLogs, Some(&[])).unwrap();
    WriteFlagLogsRequest::decode(a.as_slice()).unwrap();
    WriteFlagLogsRequest::decode(b.as_slice()).unwrap();
}

#[test]
fn apply_dedup_suppresses_repeated_exposures() {
    let mut g = instance(ours(), Clock::Fixed(ORACLE_TIME));
    let mut set = set_state_request(fixture_state(), &fixture_account());
    set.enable_apply_dedup = true;
    g.call::<Void>(Export::SetResolverState, Some(&set)).unwrap();
    for _ in 0..3 {
        resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), true)).unwrap();
    }
    resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(2), true)).unwrap();
    let logs = flush_logs(&mut g);
    assert_eq!(logs.flag_assigned.len(), 2, "visitor 1 once, visitor 2 once");
    let dedup = logs.telemetry_data.unwrap().apply_dedup.expect("dedup telemetry when enabled");
    assert_eq!((dedup.applies_total, dedup.applies_deduped), (4, 2));
}

#[test]
fn disabled_exposure_collection_logs_no_exposures_and_mints_no_token() {
    let mut g = instance(ours(), Clock::Fixed(ORACLE_TIME));
    let mut set = set_state_request(fixture_state(), &fixture_account());
    set.disable_exposure_collection = true;
    g.call::<Void>(Export::SetResolverState, Some(&set)).unwrap();
    let applied = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), true)).unwrap();
    let deferred = resolve(&mut g, request(FIXTURE_SECRET, &[FT2], visitor(1), false)).unwrap();
    assert!(applied.resolve_token.is_empty() && deferred.resolve_token.is_empty());
    let logs = flush_logs(&mut g);
    assert!(logs.flag_assigned.is_empty());
    assert_eq!(logs.flag_resolve_info.len(), 1, "resolve logs are unaffected");
}

mod materializations {
    use super::*;
    use confidence_resolver::proto::confidence::flags::resolver::v1::{
        resolve_process_response, MaterializationRecord, ResolveProcessRequest, ResolveProcessResponse,
    };

    const SECRET: &str = STICKY_SECRET;
    const RULE: &str = "flags/exp/rules/sticky";

    fn guest() -> confidence_host::guest::Guest {
        let state = sticky_state();
        loaded(ours(), state.encode(), &state.account_id, Clock::Fixed(ORACLE_TIME))
    }

    fn req(unit: &str) -> confidence_resolver::proto::confidence::flags::resolver::v1::ResolveFlagsRequest {
        request(SECRET, &["flags/exp"], to_struct(&json!({ "targeting_key": unit })), true)
    }

    #[test]
    fn a_sticky_rule_suspends_for_reads_and_the_stored_variant_wins_on_resume() {
        let mut g = guest();
        let suspended = match resolve_process(&mut g, ResolveProcessRequest::deferred_materializations(req("alice")))
            .unwrap()
            .result
        {
            Some(resolve_process_response::Result::Suspended(s)) => s,
            other => panic!("expected a suspension, got {other:?}"),
        };
        assert_eq!(suspended.materializations_to_read.len(), 1);
        let read = &suspended.materializations_to_read[0];
        assert_eq!((read.unit.as_str(), read.materialization.as_str(), read.rule.as_str()), ("alice", "exp-mat", RULE));
        assert!(flush_logs(&mut g).flag_resolve_info.is_empty(), "a suspended resolve logs nothing yet");

        // The store remembers variant b for alice: sticky, and nothing new to write.
        let stored = MaterializationRecord { variant: "flags/exp/variants/b".into(), ..read.clone() };
        let resumed: ResolveProcessResponse =
            resolve_process(&mut g, ResolveProcessRequest::resume(vec![stored], suspended.state.clone())).unwrap();
        let (resp, writes) = resumed.into_resolved().expect("resolved after resume");
        assert_eq!(resp.resolved_flags[0].variant, "flags/exp/variants/b");
        assert!(writes.is_empty());
        assert_eq!(flush_logs(&mut g).flag_assigned.len(), 1, "logged once, at the end");

        // No stored assignment: a fresh one, which the host is asked to write.
        let (resp, writes) = resolve_process(&mut g, ResolveProcessRequest::resume(vec![], suspended.state))
            .unwrap()
            .into_resolved()
            .unwrap();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].variant, resp.resolved_flags[0].variant);
    }

    #[test]
    fn without_a_store_the_flag_reports_materialization_not_supported() {
        let mut g = guest();
        let resp = resolve(&mut g, req("bob")).unwrap();
        assert_eq!(resp.resolved_flags[0].reason, ResolveReason::MaterializationNotSupported as i32);
    }

    #[test]
    fn static_materializations_resolve_in_one_call() {
        let mut g = guest();
        let record = MaterializationRecord {
            unit: "carol".into(),
            materialization: "exp-mat".into(),
            rule: RULE.into(),
            variant: "flags/exp/variants/a".into(),
        };
        let resp = resolve_process(&mut g, ResolveProcessRequest::static_materializations(req("carol"), vec![record]))
            .unwrap();
        assert_eq!(resp.into_resolved().unwrap().0.resolved_flags[0].variant, "flags/exp/variants/a");
    }
}
