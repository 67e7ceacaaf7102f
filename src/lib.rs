//! The Node addon: a thin binding over `confidence_host`. Options come in, calls go out, and
//! every error leaves through `errors.rs` with a stable code.

mod errors;
mod options;
// Public so the exports count as used in every build (napi registers them at load time).
pub mod testkit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confidence_resolver::proto::confidence::flags::resolver::v1::{
    resolve_process_response, AppliedFlag, ApplyFlagsRequest, MaterializationRecord, ResolveFlagsRequest,
    ResolveProcessRequest, ResolveProcessResponse, ResolveReason, ResolvedFlag,
};
use confidence_resolver::proto::google::Timestamp;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use sha2::{Digest, Sha256};

use confidence_host::engine::native::{NativeEngine, NativeEngineConfig};
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::Engine;
use confidence_host::guest::{self, GuestModule};
use confidence_host::metrics;
use confidence_host::remote_store::{RemoteStore, StoreError};
use confidence_host::resolve_token;
use confidence_host::resolver_host::ResolverHost;
use confidence_proto::json;
use errors::{BoundaryError, Result};
use options::NativeOptions;

/// See Cargo.toml: the evaluation path and the resolve-log thread hand allocations across.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Version of the pinned `confidence_resolver` crate that defines our resolution semantics.
#[napi]
pub fn resolver_crate_version() -> &'static str {
    confidence_host::RESOLVER_CRATE_VERSION
}

/// A Promise settled by `fut`; a failure rejects with its coded JS error.
fn spawn<'env, T, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, T>>
where
    T: ToNapiValue + Send + 'static,
    F: std::future::Future<Output = std::result::Result<T, BoundaryError>> + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, outcome| {
        outcome.map_err(|e| errors::reject(env, e))
    })
}

/// Our guest, compiled into the addon so `engine: 'wasm'` works from any install layout or
/// bundle (see build.rs).
#[cfg(bundled_guest)]
const BUNDLED_GUEST: Option<&[u8]> =
    Some(include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/wasm/confidence_resolver.wasm")));
#[cfg(not(bundled_guest))]
const BUNDLED_GUEST: Option<&[u8]> = None;

/// The module at `path`, or the bundled guest without one.
fn module_for(path: Option<&str>) -> std::result::Result<GuestModule, BoundaryError> {
    match path {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| BoundaryError::Module(format!("cannot read {path}: {e}")))?;
            compiled(&bytes, path)
        }
        None => compiled(
            BUNDLED_GUEST.ok_or_else(|| {
                BoundaryError::option("engine", "'wasm' needs a wasmPath: this build carries no guest")
            })?,
            "the bundled guest",
        ),
    }
}

/// Compiles a module once per process per distinct content (compiling takes ~1 s).
fn compiled(bytes: &[u8], path: &str) -> std::result::Result<GuestModule, BoundaryError> {
    static CACHE: Mutex<Option<HashMap<[u8; 32], GuestModule>>> = Mutex::new(None);
    let key: [u8; 32] = Sha256::digest(bytes).into();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(m) = cache.get(&key) {
        return Ok(m.clone());
    }
    let module = GuestModule::new(bytes).map_err(|e| BoundaryError::Module(format!("{path}: {e}")))?;
    cache.insert(key, module.clone());
    Ok(module)
}

/// The engine named by the `engine` option. Native is the default without a module: same answers and logs as
/// the guest (differential suites in `tests/engine_native.rs`), no module to compile at start,
/// and several times cheaper per evaluation (`npm run bench`).
fn build_engine(engine: Option<&str>, wasm_path: Option<&str>) -> std::result::Result<Arc<dyn Engine>, BoundaryError> {
    let default = if wasm_path.is_some() { "wasm" } else { "native" };
    match (engine.unwrap_or(default), wasm_path) {
        ("native", None) => Ok(Arc::new(NativeEngine::new(NativeEngineConfig::default())?)),
        ("native", Some(_)) => Err(BoundaryError::option("wasmPath", "needs engine: 'wasm'")),
        ("wasm", path) => Ok(Arc::new(WasmEngine::new(module_for(path)?, WasmEngineConfig::default())?)),
        (other, _) => Err(BoundaryError::option("engine", format!("must be 'native' or 'wasm', got {other:?}"))),
    }
}

/// Compiles and validates a resolver module: returns its exports when `wasm` has Confidence's
/// guest ABI, throws a readable error otherwise (not wasm, missing exports, unknown imports).
#[napi]
pub fn validate_resolver_module(wasm: Buffer) -> Result<Vec<String>> {
    let module = GuestModule::new(&wasm).map_err(BoundaryError::from)?;
    Ok(guest::Export::ALL.into_iter().filter(|e| module.has_export(*e)).map(|e| e.name().to_string()).collect())
}

/// Reads the options object. An unknown key or a wrongly typed value is an `INVALID_OPTION`
/// error that names the key and never echoes the value (it may be a key or a secret).
fn parse_options(env: &Env, raw: Object) -> std::result::Result<NativeOptions, BoundaryError> {
    let napi = |e: napi::Error| BoundaryError::Internal(e.reason);
    let given: Vec<String> = Object::keys(&raw)
        .map_err(napi)?
        .into_iter()
        .filter(|key| {
            let value = raw.get_named_property::<Unknown>(key).and_then(|v| v.get_type());
            !matches!(value, Ok(ValueType::Undefined | ValueType::Null))
        })
        .collect();
    // napi reads an object only as a property, so the options ride in a holder object.
    let mut holder = Object::new(env).map_err(napi)?;
    holder.set_named_property("options", raw).map_err(napi)?;
    let read = |holder: &Object| {
        holder.get_named_property::<NativeOptions>("options").map_err(|e| {
            // napi's text ends with the field (`... on NativeOptions.encryptionKey`) and quotes
            // the value before it: only the field name is kept.
            let field: String = e
                .reason
                .rsplit_once("NativeOptions.")
                .map(|(_, f)| f.chars().take_while(char::is_ascii_alphanumeric).collect())
                .unwrap_or_else(|| "options".into());
            BoundaryError::option(field, "has the wrong type")
        })
    };
    let options = read(&holder)?;
    // What survives a round trip through `NativeOptions` is what it knows.
    holder.set_named_property("known", read(&holder)?).map_err(napi)?;
    let known = Object::keys(&holder.get_named_property::<Object>("known").map_err(napi)?).map_err(napi)?;
    match given.into_iter().find(|key| !known.contains(key)) {
        Some(unknown) => Err(BoundaryError::option(unknown, "is not an option of NativeResolver")),
        None => Ok(options),
    }
}

/// One resolved flag, in the resolver's own terms.
#[napi(object)]
pub struct NativeResolvedFlag {
    /// `flags/<name>`.
    pub flag: String,
    /// `flags/<name>/variants/<variant>`, empty when no variant was assigned.
    pub variant: String,
    /// Confidence's reason name, e.g. `RESOLVE_REASON_MATCH`.
    pub reason: String,
    /// The variant's value as JSON, absent when no variant was assigned.
    pub value_json: Option<String>,
    pub should_apply: bool,
    pub assignment_origin: String,
}

#[napi(object)]
pub struct NativeResolveResult {
    pub resolve_id: String,
    /// Pass back to `applyFlag` for `apply = false` resolves.
    pub resolve_token: Buffer,
    pub flags: Vec<NativeResolvedFlag>,
    /// Sticky assignments to store (only from `resolveWithStore`/`resume`).
    pub materializations_to_write: Vec<NativeMaterialization>,
}

/// A materialization record (docs/resolver.md, "Materializations and the resolve process"): a read query, a read result or a write. `rule`
/// empty = segment inclusion, else the variant `unit` got for that rule (`variant` empty = none).
#[napi(object)]
pub struct NativeMaterialization {
    pub unit: String,
    pub materialization: String,
    pub rule: String,
    pub variant: String,
}

/// A resolve paused for materialization-store reads: read `reads`, then call `resume` with
/// `state` and the records found.
#[napi(object)]
pub struct NativeSuspended {
    pub reads: Vec<NativeMaterialization>,
    pub state: Buffer,
}

/// One step of a resolve with a store: exactly one of the two is set.
#[napi(object)]
pub struct NativeResolveStep {
    pub resolved: Option<NativeResolveResult>,
    pub suspended: Option<NativeSuspended>,
}

#[napi(object)]
pub struct NativeStatus {
    pub ready: bool,
    pub fetches: f64,
    pub updates: f64,
    pub failures: f64,
    pub consecutive_failures: f64,
    /// Milliseconds since the epoch of the last successful fetch.
    pub last_success_ms: Option<f64>,
    pub etag: Option<String>,
    pub last_error: Option<String>,
    pub changed_flags: Vec<String>,
    /// The state in force was restored from the snapshot and not yet confirmed by the CDN.
    pub from_snapshot: bool,
}

/// A message for the provider's logger.
#[napi(object)]
pub struct NativeNotice {
    /// `"info"` or `"warn"`.
    pub level: String,
    pub message: String,
}

/// One provider's native half: a resolver engine kept fresh from the CDN and flushing its
/// logs to Confidence in the background. Evaluations are synchronous and never wait on I/O.
#[napi]
pub struct NativeResolver {
    host: Arc<ResolverHost>,
    secret: String,
    /// The remote materialization store, built on first use.
    store: std::sync::OnceLock<std::result::Result<Arc<RemoteStore>, StoreError>>,
}

/// One resolver answer as the JS object: the resolved flags, or the reads it waits for.
fn step_of(response: ResolveProcessResponse) -> Result<NativeResolveStep> {
    let resolved = match response.result {
        Some(resolve_process_response::Result::Suspended(s)) => {
            let reads = s.materializations_to_read.into_iter().map(native_record).collect();
            return Ok(NativeResolveStep {
                resolved: None,
                suspended: Some(NativeSuspended { reads, state: s.state.into() }),
            });
        }
        Some(resolve_process_response::Result::Resolved(r)) => r,
        None => return Err(BoundaryError::Internal("the resolver returned an empty response".into()).into()),
    };
    let response = resolved.response.unwrap_or_default();
    let flags = response.resolved_flags.into_iter().map(native_flag).collect();
    Ok(NativeResolveStep {
        resolved: Some(NativeResolveResult {
            resolve_id: response.resolve_id,
            resolve_token: response.resolve_token.into(),
            flags,
            materializations_to_write: resolved.materializations_to_write.into_iter().map(native_record).collect(),
        }),
        suspended: None,
    })
}

/// The parts of a resolve that took several requests, as one result: all their flags, the
/// first part's resolve id, and one token that applies any of them (`resolve_token.rs`).
fn combined(mut parts: Vec<NativeResolveResult>) -> NativeResolveResult {
    if parts.len() == 1 {
        if let Some(only) = parts.pop() {
            return only;
        }
    }
    let tokens: Vec<(Vec<u8>, Vec<String>)> =
        parts.iter().map(|p| (p.resolve_token.to_vec(), p.flags.iter().map(|f| f.flag.clone()).collect())).collect();
    let resolve_id = parts.first().map(|p| p.resolve_id.clone()).unwrap_or_default();
    NativeResolveResult {
        resolve_id,
        resolve_token: resolve_token::combine(&tokens).into(),
        flags: parts.into_iter().flat_map(|p| p.flags).collect(),
        materializations_to_write: Vec::new(),
    }
}

fn native_record(r: MaterializationRecord) -> NativeMaterialization {
    NativeMaterialization { unit: r.unit, materialization: r.materialization, rule: r.rule, variant: r.variant }
}

fn native_flag(f: ResolvedFlag) -> NativeResolvedFlag {
    NativeResolvedFlag {
        reason: ResolveReason::try_from(f.reason)
            .map(|r| r.as_str_name().to_string())
            .unwrap_or_else(|_| "RESOLVE_REASON_UNSPECIFIED".into()),
        value_json: f.value.as_ref().map(|v| json::from_struct(v).to_string()),
        flag: f.flag,
        variant: f.variant,
        should_apply: f.should_apply,
        assignment_origin: f.assignment_origin,
    }
}

fn record(r: NativeMaterialization) -> MaterializationRecord {
    MaterializationRecord { unit: r.unit, materialization: r.materialization, rule: r.rule, variant: r.variant }
}

#[napi]
impl NativeResolver {
    /// Construction errors throw with their code: `INVALID_OPTION` naming the option (also for
    /// an unknown or wrongly typed one), or `INVALID_MODULE` for a `wasmPath` that is not a
    /// resolver.
    #[napi(constructor, ts_args_type = "options: NativeOptions")]
    pub fn new(env: &Env, options: Object) -> napi::Result<Self> {
        parse_options(env, options).and_then(Self::build).map_err(|e| errors::throw(env, e))
    }

    /// The engine the options name, and a host configured by them (`options.rs`).
    fn build(options: NativeOptions) -> std::result::Result<Self, BoundaryError> {
        let engine = build_engine(options.engine.as_deref(), options.wasm_path.as_deref())?;
        let secret = options.flag_client_secret.clone();
        let config = options.host_config()?;
        let host = ResolverHost::new(engine, config).map_err(BoundaryError::Host)?;
        Ok(NativeResolver { host: Arc::new(host), secret, store: std::sync::OnceLock::new() })
    }

    /// Starts background sync and flushing; resolves once a state is in force, rejects with
    /// the last failure after `timeoutMs` (the host keeps retrying either way).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn initialize<'env>(&self, env: &'env Env, timeout_ms: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        let host = self.host.clone();
        spawn(env, async move {
            host.start()?;
            Ok(host.wait_ready(Duration::from_millis(u64::from(timeout_ms))).await?)
        })
    }

    /// Resolves `flags` (`flags/<name>`; empty = all of the client's) for a context given as
    /// JSON. Synchronous: a resolve takes microseconds and touches no network. Flags that need
    /// a materialization store come back with reason `RESOLVE_REASON_MATERIALIZATION_NOT_SUPPORTED`.
    #[napi(catch_unwind)]
    pub fn resolve(&self, flags: Vec<String>, context_json: String, apply: bool) -> Result<NativeResolveResult> {
        let all = flags.is_empty();
        let request = self.request(flags, &context_json, apply)?;
        let responses = if all {
            // Every flag, in as many requests as the state needs (the resolver caps one).
            self.engine()?.resolve_all(request).map_err(BoundaryError::from)?
        } else {
            vec![self
                .engine()?
                .resolve(ResolveProcessRequest::without_materializations(request))
                .map_err(BoundaryError::from)?]
        };
        let mut parts = Vec::with_capacity(responses.len());
        for response in responses {
            match step_of(response)? {
                NativeResolveStep { resolved: Some(resolved), .. } => parts.push(resolved),
                _ => {
                    return Err(BoundaryError::Internal(
                        "the resolver asked for materializations without a store".into(),
                    )
                    .into())
                }
            }
        }
        Ok(combined(parts))
    }

    /// The hot path of one evaluation: `flag` (`flags/<name>`) resolved for a context given as
    /// JSON, or `null` when the client has no such flag. Like `resolve` without the resolve id
    /// and token, which a single evaluation never needs (they cost a Buffer per call).
    #[napi(catch_unwind)]
    pub fn evaluate(&self, flag: String, context_json: String, apply: bool) -> Result<Option<NativeResolvedFlag>> {
        let request =
            ResolveProcessRequest::without_materializations(self.request(vec![flag], &context_json, apply)?);
        let response = self.engine()?.resolve(request).map_err(BoundaryError::from)?;
        match response.result {
            Some(resolve_process_response::Result::Resolved(r)) => {
                Ok(r.response.unwrap_or_default().resolved_flags.into_iter().next().map(native_flag))
            }
            _ => Err(BoundaryError::Internal("the resolver asked for materializations without a store".into()).into()),
        }
    }

    /// Like `resolve`, for a provider with a materialization store: the answer, or the reads
    /// the resolver needs first (then `resume`).
    #[napi(catch_unwind)]
    pub fn resolve_with_store(
        &self,
        flags: Vec<String>,
        context_json: String,
        apply: bool,
    ) -> Result<NativeResolveStep> {
        self.step(ResolveProcessRequest::deferred_materializations(self.request(flags, &context_json, apply)?))
    }

    /// Continues a suspended resolve with the records the store found (negatives omitted).
    #[napi(catch_unwind)]
    pub fn resume(&self, state: Buffer, found: Vec<NativeMaterialization>) -> Result<NativeResolveStep> {
        let records = found.into_iter().map(record).collect();
        self.step(ResolveProcessRequest::resume(records, state.to_vec()))
    }

    fn request(&self, flags: Vec<String>, context_json: &str, apply: bool) -> Result<ResolveFlagsRequest> {
        let context = json::struct_from_json(context_json).map_err(BoundaryError::from)?;
        Ok(ResolveFlagsRequest {
            flags,
            evaluation_context: Some(context),
            client_secret: self.secret.clone(),
            apply,
            sdk: None,
        })
    }

    fn step(&self, request: ResolveProcessRequest) -> Result<NativeResolveStep> {
        step_of(self.engine()?.resolve(request).map_err(BoundaryError::from)?)
    }

    /// Records the exposure of `flag` from an earlier `apply = false` resolve.
    #[napi(catch_unwind)]
    pub fn apply_flag(&self, resolve_token: Buffer, flag: String) -> Result<()> {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now = Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 };
        let request = ApplyFlagsRequest {
            flags: vec![AppliedFlag { flag: flag.clone(), apply_time: Some(now) }],
            client_secret: self.secret.clone(),
            resolve_token: resolve_token::part_for(&resolve_token, &flag)
                .ok_or_else(|| BoundaryError::Internal(format!("the resolve token has no flag {flag}")))?
                .to_vec(),
            send_time: Some(now),
            sdk: None,
        };
        Ok(self.engine()?.apply(&request).map_err(BoundaryError::from)?)
    }

    /// Telemetry for one evaluation: its outcome (a `ResolveReason` number, docs/resolver.md, "Provider behaviour") and
    /// latency. Best effort: never throws.
    #[napi(catch_unwind)]
    pub fn register_resolve(&self, reason: i32, latency_us: u32) {
        if let Ok(engine) = self.host.open_engine() {
            engine.register_resolve(reason, latency_us);
        }
    }

    /// Telemetry for many evaluations at once: `(reason, latencyUs)` pairs, so the provider
    /// crosses into Rust once per batch instead of once per evaluation. Best effort.
    #[napi(catch_unwind)]
    pub fn register_resolves(&self, pairs: Uint32Array) {
        let Ok(engine) = self.host.open_engine() else { return };
        for pair in pairs.chunks_exact(2) {
            engine.register_resolve(pair[0] as i32, pair[1]);
        }
    }

    /// Uploads everything logged so far; resolves with the number of batches sent.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn flush<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, u32>> {
        let host = self.host.clone();
        spawn(env, async move { Ok(host.flush().await.map(|n| n as u32)?) })
    }

    /// Stops background work, then a final flush bounded by `timeoutMs`. After it resolves
    /// nothing of this resolver keeps the process alive.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env, timeout_ms: u32) -> napi::Result<PromiseRaw<'env, ()>> {
        let host = self.host.clone();
        spawn(env, async move { Ok(host.close(Duration::from_millis(u64::from(timeout_ms))).await.map(|_| ())?) })
    }

    /// Prometheus text: the host's counters (fetches, 304s, failures, swaps, uploads, dropped
    /// logs, traps, recycles, guest memory) and the resolver's own snapshot.
    #[napi(catch_unwind)]
    pub fn metrics(&self) -> String {
        let engine = self.host.engine();
        metrics::render(
            &self.host.status().snapshot(),
            &self.host.uploader().stats(),
            &engine.metrics(),
            &engine.prometheus("confidence"),
        )
    }

    /// The flags changed by all state swaps since the previous call (sorted), or `null` when
    /// there was no swap. The provider polls it to emit CONFIGURATION_CHANGED.
    #[napi]
    pub fn take_changed_flags(&self) -> Option<Vec<String>> {
        self.host.status().take_changed_flags()
    }

    /// Takes everything logged and not yet uploaded (serialized `WriteFlagLogsRequest`s)
    /// instead of uploading it: what an offline provider would have sent. For the test kit.
    #[napi]
    pub async fn take_logs(&self) -> Vec<Buffer> {
        self.host.take_logs().await.into_iter().map(|b| Buffer::from(b.to_vec())).collect()
    }

    #[napi]
    pub fn status(&self) -> NativeStatus {
        let s = self.host.status().snapshot();
        NativeStatus {
            ready: self.host.status().has_state(),
            fetches: s.fetches as f64,
            updates: s.updates as f64,
            failures: s.failures as f64,
            consecutive_failures: s.consecutive_failures as f64,
            last_success_ms: s
                .last_success
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as f64),
            etag: s.etag,
            last_error: s.last_error,
            changed_flags: s.changed_flags,
            from_snapshot: s.from_snapshot,
        }
    }

    /// Messages for the provider's logger since the previous call, oldest first (the host never
    /// calls into JS itself).
    #[napi]
    pub fn take_notices(&self) -> Vec<NativeNotice> {
        self.host
            .notices()
            .take()
            .into_iter()
            .map(|n| NativeNotice { level: n.level.as_str().to_string(), message: n.message })
            .collect()
    }

    /// The remote materialization store (`'CONFIDENCE_REMOTE_STORE'`): the records it holds for
    /// the resolver's `reads`, negatives omitted, ready for `resume`. Rejects with `STORE_FAILED`
    /// after docs/remote-store.md's bounded retries, at once when offline.
    #[napi(ts_return_type = "Promise<Array<NativeMaterialization>>")]
    pub fn read_remote_materializations<'env>(
        &self,
        env: &'env Env,
        reads: Vec<NativeMaterialization>,
    ) -> napi::Result<PromiseRaw<'env, Vec<NativeMaterialization>>> {
        let store = self.remote_store();
        let queries: Vec<MaterializationRecord> = reads.into_iter().map(record).collect();
        spawn(env, async move {
            let found = store?.read(&queries).await?;
            Ok(found.into_iter().map(native_record).collect())
        })
    }

    /// Stores the resolver's sticky assignments in the remote materialization store.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn write_remote_materializations<'env>(
        &self,
        env: &'env Env,
        writes: Vec<NativeMaterialization>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let store = self.remote_store();
        let records: Vec<MaterializationRecord> = writes.into_iter().map(record).collect();
        spawn(env, async move { Ok(store?.write(&records).await?) })
    }

    /// The engine until `close`; then every evaluation path answers `NOT_READY`.
    fn engine(&self) -> std::result::Result<&Arc<dyn Engine>, BoundaryError> {
        Ok(self.host.open_engine()?)
    }

    fn remote_store(&self) -> std::result::Result<Arc<RemoteStore>, BoundaryError> {
        let config = self.host.config();
        self.engine()?;
        if config.offline {
            return Err(StoreError::Offline.into());
        }
        self.store
            .get_or_init(|| RemoteStore::new(&config.upload.api_base_url, &self.secret, &config.sync.net).map(Arc::new))
            .clone()
            .map_err(BoundaryError::from)
    }
}
