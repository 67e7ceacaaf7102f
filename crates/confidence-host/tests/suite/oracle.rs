//! Every recorded case of Confidence's released resolver, replayed through our guest.

use crate::common::*;
use confidence_host::guest::GuestError;
use confidence_resolver::proto::confidence::flags::resolver::v1::ResolveProcessRequest;

#[test]
fn every_oracle_case_gives_the_recorded_answer() {
    let cases = oracle_cases();
    assert!(cases.len() >= 3000, "expected the full oracle file, got {} cases", cases.len());
    let mut g = fixture_guest(ours());
    let mut failures = Vec::new();
    for case in &cases {
        // The oracle was recorded with `deferred_materializations`; this state needs no store.
        let req = ResolveProcessRequest::deferred_materializations(oracle_request(case));
        let got = match resolve_process(&mut g, req) {
            Ok(r) => Ok(comparable(&r.into_resolved().expect("resolved").0)),
            Err(GuestError::Resolver(e)) => Err(e),
            Err(e) => panic!("case {}: guest failed: {e}", case["id"]),
        };
        let want = expected(case);
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case["id"]));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}
