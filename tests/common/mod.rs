//! Shared by the integration tests: fixture paths, compiled guest modules (ours and, when
//! `CONFIDENCE_OFFICIAL_WASM` is set, Confidence's released one), JSON ↔ `Struct`, and
//! one-line calls into a guest.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use confidence_openfeature_provider::guest::{Clock, Export, Guest, GuestError, GuestModule, Limits};
use confidence_proto::{SetResolverStateRequest, Void};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    sdk, ResolveFlagsRequest, ResolveFlagsResponse, ResolveProcessRequest, ResolveProcessResponse, Sdk, SdkId,
    WriteFlagLogsRequest,
};
use confidence_resolver::proto::google::{Struct, Timestamp};

pub const FIXTURE_SECRET: &str = "mkjJruAATQWjeY7foFIWfVAcBWnci2YF";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo().join("..").join("shared").join("fixtures")
}

pub fn fixture_state() -> Vec<u8> {
    std::fs::read(fixtures().join("resolver_state_current.pb")).expect("../shared/fixtures beside the repo")
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

pub use confidence_openfeature_provider::context::{from_struct, to_struct};

/// Oracle cases (`../shared/fixtures/oracle/resolve_cases.jsonl`).
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
