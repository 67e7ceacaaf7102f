//! Shared by the integration tests: fixture paths, compiled guest modules (ours and, when
//! `CONFIDENCE_OFFICIAL_WASM` is set, Confidence's released one), JSON ↔ `Struct`, and
//! one-line calls into a guest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use confidence_host::guest::{Clock, Export, Guest, GuestError, GuestModule, Limits};
use confidence_proto::{SetResolverStateRequest, Void};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    sdk, AppliedFlag, ApplyFlagsRequest, ResolveFlagsRequest, ResolveFlagsResponse, ResolveProcessRequest,
    ResolveProcessResponse, Sdk, SdkId, WriteFlagLogsRequest,
};
use confidence_resolver::proto::google::{Struct, Timestamp};

pub const FIXTURE_SECRET: &str = "mkjJruAATQWjeY7foFIWfVAcBWnci2YF";

/// The repository root (this crate is `crates/confidence-host`).
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

pub fn fixtures() -> PathBuf {
    repo().join("fixtures")
}

pub fn fixture_state() -> Vec<u8> {
    std::fs::read(fixtures().join("resolver_state_current.pb")).expect("fixtures/resolver_state_current.pb")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("fixtures/{name}: {e}"))
}

pub fn fixture_account() -> String {
    std::fs::read_to_string(fixtures().join("account_id")).expect("fixture account id")
}

fn compile(path: &std::path::Path) -> GuestModule {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e} (build the guest first: `npm run build`)", path.display()));
    GuestModule::new(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn our_wasm_path() -> PathBuf {
    repo().join("wasm").join("confidence_resolver.wasm")
}

/// Our guest, compiled once per test binary.
pub fn ours() -> &'static GuestModule {
    static M: OnceLock<GuestModule> = OnceLock::new();
    M.get_or_init(|| compile(&our_wasm_path()))
}

/// Confidence's released guest, when `CONFIDENCE_OFFICIAL_WASM` names it
/// (`node scripts/fetch-official-wasm.mjs` downloads it).
pub fn official() -> Option<&'static GuestModule> {
    static M: OnceLock<Option<GuestModule>> = OnceLock::new();
    M.get_or_init(|| {
        let path = std::env::var_os("CONFIDENCE_OFFICIAL_WASM")?;
        Some(compile(std::path::Path::new(&path)))
    })
    .as_ref()
}

/// [`official`], or `None` after a "skipped …" line on stderr: straight past the harness's
/// capture, so every run shows what it did not cover.
pub fn official_or_skip(test: &str) -> Option<&'static GuestModule> {
    let m = official();
    if m.is_none() {
        // CI sets this once the binary was fetched: from then on a skip would hide a gap.
        assert!(
            std::env::var_os("CONFIDENCE_REQUIRE_OFFICIAL").is_none(),
            "{test}: CONFIDENCE_REQUIRE_OFFICIAL is set but CONFIDENCE_OFFICIAL_WASM is not"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {test}: CONFIDENCE_OFFICIAL_WASM is not set (export CONFIDENCE_OFFICIAL_WASM=$(node scripts/fetch-official-wasm.mjs))"
        );
    }
    m
}

/// The modules a host-level test runs against, ours first: our guest, and Confidence's
/// released binary when `CONFIDENCE_OFFICIAL_WASM` names it (else `test` is reported skipped
/// for it). Either binary must run behind the same host with the same observable results.
pub fn modules_under_test(test: &str) -> Vec<(&'static str, &'static GuestModule)> {
    let released = official_or_skip(&format!("{test} with the released binary"));
    std::iter::once(("ours", ours())).chain(released.map(|m| ("released", m))).collect()
}

/// Keeps what our guest (the first module of [`modules_under_test`]) observed and requires every
/// later module to observe the same.
pub struct SameAsOurs<T> {
    ours: Option<T>,
}

impl<T> Default for SameAsOurs<T> {
    fn default() -> Self {
        SameAsOurs { ours: None }
    }
}

impl<T: PartialEq + std::fmt::Debug> SameAsOurs<T> {
    pub fn check(&mut self, module: &str, observed: T) {
        match &self.ours {
            None => self.ours = Some(observed),
            Some(ours) => assert!(
                *ours == observed,
                "{module} differs from our guest:\n  ours:   {ours:?}\n  {module}: {observed:?}"
            ),
        }
    }
}

/// 2025-09-01T12:00:00Z, the clock the oracle answers were recorded with.
pub const ORACLE_TIME: Timestamp = Timestamp { seconds: 1_756_728_000, nanos: 0 };

pub fn sdk() -> Sdk {
    Sdk { sdk: Some(sdk::Sdk::Id(SdkId::JsLocalServerProvider as i32)), version: "0.1.0".into() }
}

pub fn set_state_request(state: Vec<u8>, account: &str) -> SetResolverStateRequest {
    SetResolverStateRequest { state, account_id: account.into(), sdk: Some(sdk()), ..Default::default() }
}

pub fn instance(module: &GuestModule, clock: Clock) -> Guest {
    module.instantiate(Limits::default(), clock).expect("instantiate")
}

/// An instance with `state` loaded.
pub fn loaded(module: &GuestModule, state: Vec<u8>, account: &str, clock: Clock) -> Guest {
    let mut g = instance(module, clock);
    g.call::<Void>(Export::SetResolverState, Some(&set_state_request(state, account))).expect("set state");
    g
}

pub fn fixture_guest(module: &GuestModule) -> Guest {
    loaded(module, fixture_state(), &fixture_account(), Clock::Fixed(ORACLE_TIME))
}

pub fn request(secret: &str, flags: &[&str], context: Struct, apply: bool) -> ResolveFlagsRequest {
    ResolveFlagsRequest {
        flags: flags.iter().map(|f| f.to_string()).collect(),
        evaluation_context: Some(context),
        client_secret: secret.into(),
        apply,
        sdk: Some(sdk()),
    }
}

/// Resolves without a materialization store and unwraps the `resolved` outcome.
pub fn resolve(g: &mut Guest, req: ResolveFlagsRequest) -> Result<ResolveFlagsResponse, GuestError> {
    resolve_process(g, ResolveProcessRequest::without_materializations(req))
        .map(|r| r.into_resolved().expect("no store configured, so never suspended").0)
}

pub fn resolve_process(g: &mut Guest, req: ResolveProcessRequest) -> Result<ResolveProcessResponse, GuestError> {
    g.call(Export::ResolveFlags, Some(&req))
}

pub fn flush_logs(g: &mut Guest) -> WriteFlagLogsRequest {
    g.call(Export::BoundedFlushLogs, None).expect("bounded flush")
}

pub use confidence_proto::json::{from_struct, to_struct};

/// Oracle cases (`fixtures/oracle/resolve_cases.jsonl`).
pub fn oracle_cases() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("oracle").join("resolve_cases.jsonl")).expect("oracle cases");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("oracle line")).collect()
}

/// The request of an oracle case.
pub fn oracle_request(case: &serde_json::Value) -> ResolveFlagsRequest {
    let r = &case["request"];
    ResolveFlagsRequest {
        flags: r["flags"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(String::from)).collect(),
        evaluation_context: Some(to_struct(&r["evaluationContext"])),
        client_secret: r["clientSecret"].as_str().unwrap_or_default().into(),
        apply: r["apply"].as_bool().unwrap_or(false),
        sdk: None,
    }
}

/// flag -> (variant, reason name, value, should_apply): what the oracle records per flag.
pub type Comparable = BTreeMap<String, (String, String, serde_json::Value, bool)>;

/// A response in the oracle's comparable form: flag -> (variant, reason name, value, should_apply).
pub fn comparable(resp: &ResolveFlagsResponse) -> Comparable {
    resp.resolved_flags
        .iter()
        .map(|f| {
            let reason = confidence_resolver::proto::confidence::flags::resolver::v1::ResolveReason::try_from(f.reason)
                .map(|r| r.as_str_name().to_string())
                .unwrap_or_else(|_| f.reason.to_string());
            let value = f.value.as_ref().map(from_struct).unwrap_or(serde_json::Value::Null);
            (f.flag.clone(), (f.variant.clone(), reason, value, f.should_apply))
        })
        .collect()
}

/// The oracle's expected answer in the same form (numbers normalised through `Struct`).
pub fn expected(case: &serde_json::Value) -> Result<Comparable, String> {
    if let Some(e) = case.get("error") {
        return Err(e.as_str().unwrap_or_default().to_string());
    }
    Ok(case["resolvedFlags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let value = match &f["value"] {
                serde_json::Value::Null => serde_json::Value::Null,
                v => from_struct(&to_struct(v)),
            };
            (
                f["flag"].as_str().unwrap_or_default().to_string(),
                (
                    f["variant"].as_str().unwrap_or_default().to_string(),
                    f["reason"].as_str().unwrap_or_default().to_string(),
                    value,
                    f["shouldApply"].as_bool().unwrap_or(false),
                ),
            )
        })
        .collect())
}

/// A tiny deterministic PRNG (splitmix64) for generated requests: reproducible by seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    /// Printable ASCII of a random length up to `max`.
    pub fn ascii_upto(&mut self, max: u64) -> String {
        let len = self.below(max + 1) as usize;
        self.ascii(len)
    }
    pub fn ascii(&mut self, len: usize) -> String {
        (0..len).map(|_| (b'!' + self.below(94) as u8) as char).collect()
    }
}

// ---- Differential helpers: tests/differential.rs (ours vs the released binary) and
// tests/engine_native.rs (native vs wasm engine) compare the same way. ----------------------

/// Random contexts around what the fixture state targets (`visitor_id`), plus noise.
pub fn generated_fixture_requests(seed: u64, n: usize) -> Vec<ResolveFlagsRequest> {
    use serde_json::{json, Value as J};
    let mut rng = Rng(seed);
    let flags = ["flags/fallthrough-test-1", "flags/fallthrough-test-2", "flags/tutorial-feature", "flags/unknown"];
    (0..n)
        .map(|_| {
            let visitor: J = match rng.below(12) {
                0 => J::Null,
                1 => json!("tutorial_visitor"),
                2 => json!(rng.below(1 << 40)),
                3 => json!(rng.below(1000) as f64 + 0.5),
                4 => json!(rng.chance(50)),
                5 => json!([rng.ascii(3)]),
                6 => json!({"id": rng.ascii(4)}),
                7 => json!(""),
                8 => json!(rng.ascii(101)),
                9 => json!(format!("ü-{}-ß", rng.below(1000))),
                _ => json!(rng.ascii_upto(30)),
            };
            let mut ctx = json!({ "country": *rng.pick(&["SE", "US", "se", "xx"]), "age": rng.below(90) });
            if !rng.chance(5) {
                ctx["visitor_id"] = visitor;
            }
            if rng.chance(30) {
                ctx["targeting_key"] = json!(rng.ascii(8));
            }
            if rng.chance(20) {
                ctx["user"] = json!({"visitor_id": "tutorial_visitor", "tags": ["a", 1, null]});
            }
            let picked: Vec<&str> = flags.iter().filter(|_| rng.chance(40)).copied().collect();
            let secret = if rng.chance(95) { FIXTURE_SECRET.to_string() } else { rng.ascii_upto(20) };
            request(&secret, &picked, to_struct(&ctx), rng.chance(50))
        })
        .collect()
}

/// Resolved flags as (name, encoded bytes), sorted; errors as their message.
pub type Outcome = Result<Vec<(String, Vec<u8>)>, String>;

/// An error's text without what differs per build: the `[XXXXXXXX]` code of internal errors
/// and the hash-map order of the `available=[...]` secrets.
pub fn without_code(o: Outcome) -> Outcome {
    o.map_err(|e| match e.split_once("available=[") {
        Some((head, tail)) => {
            let mut secrets: Vec<&str> = tail.trim_end_matches(']').split(", ").collect();
            secrets.sort();
            format!("{head}available=[{}]", secrets.join(", "))
        }
        None => e.split(" [").next().unwrap_or_default().to_string(),
    })
}

/// A process outcome in comparable form: resolved flags and writes sorted, or a suspension's
/// sorted reads (flag order is hash-map order, which differs per build and per process).
pub fn outcome_of(response: ResolveProcessResponse) -> Vec<(String, Vec<u8>)> {
    use confidence_resolver::proto::confidence::flags::resolver::v1::resolve_process_response;
    use prost::Message;
    let mut out: Vec<(String, Vec<u8>)> = match response.result {
        Some(resolve_process_response::Result::Suspended(s)) => {
            s.materializations_to_read.iter().map(|m| ("suspended".to_string(), m.encode_to_vec())).collect()
        }
        result => {
            let (resp, writes) = ResolveProcessResponse { result }.into_resolved().expect("resolved or suspended");
            let mut flags: Vec<_> = resp.resolved_flags.iter().map(|f| (f.flag.clone(), f.encode_to_vec())).collect();
            flags.extend(writes.iter().map(|w| ("write".to_string(), w.encode_to_vec())));
            flags
        }
    };
    out.sort();
    out
}

/// Logs in a comparable form: order-free collections sorted, resolve ids cleared, and the
/// fields that legitimately differ between builds (memory size, resolver version) dropped.
pub fn normalise(mut logs: WriteFlagLogsRequest) -> WriteFlagLogsRequest {
    use prost::Message;
    for e in &mut logs.flag_assigned {
        e.resolve_id.clear();
        // Flags of one resolve come out in the state's hash-map order, which is per build.
        e.flags.sort_by(|a, b| a.flag.cmp(&b.flag));
    }
    logs.client_resolve_info.sort_by(|a, b| a.client_credential.cmp(&b.client_credential));
    for c in &mut logs.client_resolve_info {
        c.schema.sort_by_key(|s| s.encode_to_vec());
    }
    logs.flag_resolve_info.sort_by(|a, b| a.flag.cmp(&b.flag));
    for f in &mut logs.flag_resolve_info {
        f.variant_resolve_info.sort_by(|a, b| a.variant.cmp(&b.variant));
        f.rule_resolve_info.sort_by(|a, b| a.rule.cmp(&b.rule));
        for r in &mut f.rule_resolve_info {
            r.assignment_resolve_info.sort_by(|a, b| a.assignment_id.cmp(&b.assignment_id));
        }
    }
    if let Some(t) = &mut logs.telemetry_data {
        t.memory_bytes = 0;
        t.resolver_version.clear();
    }
    logs
}

/// Flush by flush, normalised logs must agree: resolve info, every FlagAssigned in order,
/// telemetry.
pub fn assert_same_logs(name: &str, ours_logs: Vec<WriteFlagLogsRequest>, theirs_logs: Vec<WriteFlagLogsRequest>) {
    assert_eq!(ours_logs.len(), theirs_logs.len());
    let events: usize = ours_logs.iter().map(|l| l.flag_assigned.len()).sum();
    assert!(events > 0, "{name}: the workload should produce exposures");
    for (i, (x, y)) in ours_logs.iter().zip(&theirs_logs).enumerate() {
        assert_eq!(x.flag_resolve_info, y.flag_resolve_info, "{name} flush {i}: flag_resolve_info");
        assert_eq!(x.client_resolve_info, y.client_resolve_info, "{name} flush {i}: client_resolve_info");
        assert_eq!(x.flag_assigned.len(), y.flag_assigned.len(), "{name} flush {i}: number of FlagAssigned");
        if let Some(k) = (0..x.flag_assigned.len()).find(|&k| x.flag_assigned[k] != y.flag_assigned[k]) {
            panic!(
                "{name} flush {i}: FlagAssigned #{k} differs:\n  ours:   {:?}\n  theirs: {:?}",
                x.flag_assigned[k], y.flag_assigned[k]
            );
        }
        assert_eq!(x.telemetry_data, y.telemetry_data, "{name} flush {i}: telemetry");
    }
}

/// The client secret of [`labelled_state`].
pub const LABEL_SECRET: &str = "label-secret";

/// A state whose two flags both answer `label`: a response mixing two states would show it.
pub fn labelled_state(label: &str) -> SetResolverStateRequest {
    use state_builder::{obj, s_string, v_str, ClientBuilder, FlagBuilder, RuleBuilder, SegmentBuilder, StateBuilder};
    let flag = |id: &str| {
        FlagBuilder::new(id)
            .field("label", s_string())
            .variant(label, obj([("label", v_str(label))]))
            .client("app")
            .rule(RuleBuilder::full("all", "everyone", label))
    };
    let built = StateBuilder::new("acct")
        .client(ClientBuilder::new("app").secret(LABEL_SECRET))
        .segment(SegmentBuilder::new("everyone"))
        .flag(flag("first"))
        .flag(flag("second"))
        .build();
    set_state_request(built.encode(), &built.account_id)
}

/// The client secret of [`sticky_state`].
pub const STICKY_SECRET: &str = "sticky-secret";

/// One flag `exp`, split 50/50 by the sticky rule `flags/exp/rules/sticky` (materialization
/// `exp-mat`).
pub fn sticky_state() -> state_builder::BuiltState {
    use state_builder::{
        obj, s_bool, v_bool, ClientBuilder, FlagBuilder, Materialization, RuleBuilder, SegmentBuilder, StateBuilder,
    };
    StateBuilder::new("acct")
        .client(ClientBuilder::new("app").secret(STICKY_SECRET))
        .segment(SegmentBuilder::new("everyone"))
        .flag(
            FlagBuilder::new("exp")
                .field("on", s_bool())
                .variant("a", obj([("on", v_bool(true))]))
                .variant("b", obj([("on", v_bool(false))]))
                .client("app")
                .rule(
                    RuleBuilder::split("sticky", "everyone", [("a", 50), ("b", 50)])
                        .materialization(Materialization::sticky("exp-mat")),
                ),
        )
        .build()
}

/// What a client applies after an `apply = false` resolve: every flag marked `should_apply`,
/// at [`ORACLE_TIME`]. `None` for applied resolves and failed ones (no token).
pub fn deferred_apply(req: &ResolveFlagsRequest, resp: &ResolveFlagsResponse) -> Option<ApplyFlagsRequest> {
    if req.apply || resp.resolve_token.is_empty() {
        return None;
    }
    let flags = resp
        .resolved_flags
        .iter()
        .filter(|f| f.should_apply)
        .map(|f| AppliedFlag { flag: f.flag.clone(), apply_time: Some(ORACLE_TIME) })
        .collect();
    Some(ApplyFlagsRequest {
        flags,
        client_secret: req.client_secret.clone(),
        resolve_token: resp.resolve_token.clone(),
        send_time: Some(ORACLE_TIME),
        sdk: None,
    })
}

/// An apply of one flag of an earlier resolve, at [`ORACLE_TIME`].
pub fn apply_one(flag: &str, secret: &str, token: &[u8]) -> ApplyFlagsRequest {
    ApplyFlagsRequest {
        flags: vec![AppliedFlag { flag: flag.into(), apply_time: Some(ORACLE_TIME) }],
        client_secret: secret.into(),
        resolve_token: token.to_vec(),
        send_time: Some(ORACLE_TIME),
        sdk: None,
    }
}

/// Waits until `cond` holds, polling every 10 ms; fails the test naming `what` after `limit`.
/// Orders a test by what it waits for, never by how long.
pub async fn until(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// [`HostConfig::new`] for the fixture client, with every endpoint at `base_url` (a loopback
/// server), a 2 s request bound and fast loops (state poll 200 ms, log flush 300 ms).
pub fn host_config(base_url: &str) -> confidence_host::resolver_host::HostConfig {
    let mut config = confidence_host::resolver_host::HostConfig::new(FIXTURE_SECRET);
    config.sync.cdn_base_url = base_url.to_string();
    config.sync.request_timeout = std::time::Duration::from_secs(2);
    config.upload.api_base_url = base_url.to_string();
    config.state_update_interval = std::time::Duration::from_millis(200);
    config.flush_interval = std::time::Duration::from_millis(300);
    config
}
