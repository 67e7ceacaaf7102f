//! The operations of Confidence's guest ABI (docs/guest-abi.md, "Export contracts"), written once: the wasm guest
//! (`wasm/`) wraps each in its `wasm_msg` export, and the addon's native engine calls them
//! directly, so both give the same answers and the same logs by construction.
//!
//! A [`Core`] is one resolver: the installed state and everything that survives state swaps
//! (resolve and assign loggers, telemetry, exposure dedup; docs/resolver.md). Error texts
//! are the guest's, word for word. Every method takes `&self`: the guest has one `Core` for its
//! single thread, the native engine shares one between evaluation and background threads.

mod host;

pub use host::CoreHost;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use confidence_proto::{
    InitThreadRequest, PrometheusSnapshotRequest, PrometheusSnapshotResponse, SetResolverStateRequest, Void,
};
use confidence_resolver::apply_dedup::{ApplyDedup, ApplyDedupSnapshot};
use confidence_resolver::assign_logger::AssignLogger;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    resolve_process_request::Resolve, telemetry_data::ApplyDedupTelemetry, ApplyFlagsRequest, RegisterResolveRequest,
    ResolveFlagsRequest, ResolveProcessRequest, ResolveProcessResponse, ResolveReason, Sdk, WriteFlagLogsRequest,
};
use confidence_resolver::proto::google::{Struct, Timestamp};
use confidence_resolver::resolve_logger::ResolveLogger;
use confidence_resolver::telemetry::{PrometheusConfig, Telemetry, TelemetrySnapshot};
use confidence_resolver::{Client, FlagToApply, ResolveProcessState, ResolvedValue, ResolverState};
use prost::Message;

/// Upper bound of one flush's assign entries (docs/log-upload.md, "Batching and size bounds").
pub const LOG_TARGET_BYTES: usize = 4 * 1024 * 1024;
/// Resolve tokens are not encrypted (they never leave the host process); the crate still
/// wants a key.
const TOKEN_KEY: Bytes = Bytes::from_static(&[0; 16]);
/// Exposure de-duplication window and table size (docs/resolver.md, "Resolve token, apply and dedup").
const DEDUP_TTL_SECONDS: i64 = 120;
const DEDUP_CAPACITY: usize = 100_000;

/// An operation's outcome; the error is the text the guest puts in its error response.
pub type OpResult<T> = Result<T, String>;

/// The crate's resolve logger as a [`Core`] instantiates it.
pub type CoreResolveLogger = ResolveLogger<CoreHost>;

/// Takes resolve logging off the evaluating thread. The crate calls its resolve logger inside
/// every resolve; a sink may instead keep an owned copy of the call and feed the same logger
/// later, as long as [`ResolveLogSink::drain`] makes every deferred call land before a flush.
pub trait ResolveLogSink: Send + Sync {
    /// Takes over logging one resolve; `false` has it logged inline right away. `values` and
    /// `client` borrow from `state`.
    fn defer(
        &self,
        state: &Arc<ResolverState>,
        resolve_id: &str,
        context: &Struct,
        values: &[ResolvedValue<'_>],
        client: &Client,
    ) -> bool;

    /// Returns once every resolve deferred before the call is in the logger.
    fn drain(&self);
}

/// Feeds one resolve to `logger` exactly as the crate's resolver would.
pub fn log_resolve_to(
    logger: &CoreResolveLogger,
    resolve_id: &str,
    context: &Struct,
    values: &[ResolvedValue<'_>],
    client: &Client,
) {
    logger.log_resolve(resolve_id, context, &client.client_credential_name, values, client);
}

/// What `set_resolver_state` installs; replaced whole, so a resolve sees one consistent state.
struct Installed {
    state: Arc<ResolverState>,
    disable_exposure_collection: bool,
}

struct Dedup {
    enabled: bool,
    table: ApplyDedup,
    reported: ApplyDedupSnapshot,
}

type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Core {
    installed: ArcSwapOption<Installed>,
    resolve_logger: Arc<CoreResolveLogger>,
    assign_logger: AssignLogger,
    telemetry: Telemetry,
    /// The cumulative snapshot taken at the previous flush (all zeros before the first), so
    /// each flush reports what happened since the one before.
    telemetry_at_last_flush: ArcSwap<TelemetrySnapshot>,
    dedup: Mutex<Dedup>,
    /// Flushes one at a time, so two never report the same telemetry delta.
    flushing: Mutex<()>,
    clock: Clock,
    sink: Option<Box<dyn ResolveLogSink>>,
}

/// A poisoned lock only means a panic happened while it was held; the data behind these
/// locks stays consistent at every step, so carrying on is sound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Core {
    /// `clock` is the crate's notion of now (resolve and apply times, dedup expiry); `memory`
    /// the memory figure telemetry reports.
    pub fn new(
        clock: impl Fn() -> Timestamp + Send + Sync + 'static,
        memory: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        Core {
            installed: ArcSwapOption::empty(),
            resolve_logger: Arc::new(ResolveLogger::new()),
            assign_logger: AssignLogger::new(),
            telemetry: Telemetry::with_memory_provider(memory),
            telemetry_at_last_flush: ArcSwap::from_pointee(TelemetrySnapshot::default()),
            dedup: Mutex::new(Dedup {
                enabled: false,
                table: ApplyDedup::new(DEDUP_TTL_SECONDS, DEDUP_CAPACITY),
                reported: ApplyDedupSnapshot::default(),
            }),
            flushing: Mutex::new(()),
            clock: Box::new(clock),
            sink: None,
        }
    }

    /// The logger a [`ResolveLogSink`] must feed, so deferred logs land in this core's flushes.
    pub fn resolve_logger(&self) -> &Arc<CoreResolveLogger> {
        &self.resolve_logger
    }

    /// Routes resolve logs through `sink` (built around [`Core::resolve_logger`]).
    pub fn with_resolve_log_sink(mut self, sink: Box<dyn ResolveLogSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Whether a state has been installed.
    pub fn is_ready(&self) -> bool {
        self.installed.load().is_some()
    }

    fn installed(&self) -> OpResult<Arc<Installed>> {
        self.installed.load_full().ok_or_else(|| "Resolver state not set".to_string())
    }

    pub fn set_resolver_state(&self, request: &SetResolverStateRequest) -> OpResult<Void> {
        let pb = ResolverStatePb::decode(request.state.as_slice())
            .map_err(|e| format!("Failed to decode resolver state: {e}"))?;
        let state = ResolverState::from_proto(pb, &request.account_id, request.sdk.clone())?;
        lock(&self.dedup).enabled = request.enable_apply_dedup;
        self.installed.store(Some(Arc::new(Installed {
            state: Arc::new(state),
            disable_exposure_collection: request.disable_exposure_collection,
        })));
        Ok(Void {})
    }

    pub fn resolve_flags(&self, request: ResolveProcessRequest) -> OpResult<ResolveProcessResponse> {
        self.resolve_on(&*self.installed()?, request)
    }

    /// Every flag of the state for `request` (its `flags` ignored), in requests of at most
    /// `chunk` flag names, all on one state even if another is installed meanwhile: the
    /// resolver refuses a request that would return more than 5000 flags. A state of at most
    /// `chunk` flags is one request for all flags, exactly as [`Core::resolve_flags`] makes it.
    pub fn resolve_all_flags(
        &self,
        request: ResolveFlagsRequest,
        chunk: usize,
    ) -> OpResult<Vec<ResolveProcessResponse>> {
        let installed = self.installed()?;
        let mut names: Vec<&String> = installed.state.flags.keys().collect();
        if names.len() <= chunk {
            let all = ResolveFlagsRequest { flags: Vec::new(), ..request };
            return Ok(vec![self.resolve_on(&installed, ResolveProcessRequest::without_materializations(all))?]);
        }
        names.sort();
        names
            .chunks(chunk.max(1))
            .map(|part| {
                let flags = part.iter().map(|n| n.to_string()).collect();
                let one = ResolveFlagsRequest { flags, ..request.clone() };
                self.resolve_on(&installed, ResolveProcessRequest::without_materializations(one))
            })
            .collect()
    }

    fn resolve_on(&self, installed: &Installed, request: ResolveProcessRequest) -> OpResult<ResolveProcessResponse> {
        let state = &installed.state;
        // The secret and context live in the request, or inside the continuation on a resume.
        let resolve_request: Cow<'_, ResolveFlagsRequest> = match &request.resolve {
            Some(Resolve::DeferredMaterializations(r)) | Some(Resolve::WithoutMaterializations(r)) => Cow::Borrowed(r),
            Some(Resolve::StaticMaterializations(s)) => {
                Cow::Borrowed(s.resolve_request.as_ref().ok_or("resolve_request is required")?)
            }
            Some(Resolve::Resume(resume)) => Cow::Owned(
                ResolveProcessState::decode(resume.state.as_slice())
                    .map_err(|e| format!("Failed to decode continuation state: {e}"))?
                    .resolve_request
                    .ok_or("continuation missing resolve_request")?,
            ),
            None => return Err("request is required".to_string()),
        };
        let secret = resolve_request.client_secret.as_str();
        if !state.secrets.contains_key(secret) {
            return Err(unknown_secret(secret, state));
        }
        let context = resolve_request.evaluation_context.clone().unwrap_or_default();
        let resolver = state
            .get_resolver::<CoreHost>(secret, context, &TOKEN_KEY)?
            .with_disable_exposure_collection(installed.disable_exposure_collection);
        host::enter(self, state, || resolver.resolve_flags(request))
    }

    pub fn apply_flags(&self, request: &ApplyFlagsRequest) -> OpResult<Void> {
        // As in the released binary: "state not set" is the one apply error without the prefix.
        let installed = self.installed()?;
        let state = &installed.state;
        let secret = request.client_secret.as_str();
        if !state.secrets.contains_key(secret) {
            return Err(format!("apply_flags: {}", unknown_secret(secret, state)));
        }
        let resolver = state
            .get_resolver::<CoreHost>(secret, Default::default(), &TOKEN_KEY)?
            .with_disable_exposure_collection(installed.disable_exposure_collection);
        host::enter(self, state, || resolver.apply_flags(request)).map_err(|e| format!("apply_flags: {e}"))?;
        Ok(Void {})
    }

    pub fn register_resolve(&self, request: RegisterResolveRequest) -> OpResult<Void> {
        // Reasons this resolver does not know (e.g. a host's BUNDLE = 11) count as UNSPECIFIED.
        let reason = ResolveReason::try_from(request.reason).unwrap_or(ResolveReason::Unspecified);
        self.telemetry.record_latency_us(request.latency_us);
        self.telemetry.mark_resolve(reason);
        Ok(Void {})
    }

    pub fn bounded_flush_logs(&self) -> WriteFlagLogsRequest {
        let _serial = lock(&self.flushing);
        self.sweep_dedup();
        let mut logs = self.resolve_checkpoint();
        let mut telemetry = self.telemetry.delta_snapshot(&self.telemetry_at_last_flush);
        telemetry.sdk = self.installed.load().as_ref().and_then(|i| i.state.sdk.clone());
        telemetry.apply_dedup = self.dedup_telemetry();
        logs.telemetry_data = Some(telemetry);
        self.assign_logger.checkpoint_fill_with_limit(&mut logs, LOG_TARGET_BYTES, false);
        logs
    }

    pub fn bounded_flush_assign(&self) -> WriteFlagLogsRequest {
        let _serial = lock(&self.flushing);
        self.sweep_dedup();
        self.assign_logger.checkpoint_with_limit(LOG_TARGET_BYTES, true)
    }

    /// Deprecated by the bounded flushes; kept because the ABI lists it.
    pub fn flush_logs(&self) -> WriteFlagLogsRequest {
        let _serial = lock(&self.flushing);
        self.sweep_dedup();
        let mut logs = self.resolve_checkpoint();
        self.assign_logger.checkpoint_fill(&mut logs);
        logs
    }

    pub fn prometheus_snapshot(&self, request: &PrometheusSnapshotRequest) -> PrometheusSnapshotResponse {
        let config =
            PrometheusConfig { buckets_per_decade: request.buckets_per_decade, openmetrics: request.openmetrics };
        PrometheusSnapshotResponse { text: self.telemetry.snapshot().to_prometheus(&request.instance, &config) }
    }

    /// The resolve-log checkpoint, after everything a sink still holds has landed.
    fn resolve_checkpoint(&self) -> WriteFlagLogsRequest {
        if let Some(sink) = &self.sink {
            sink.drain();
        }
        self.resolve_logger.checkpoint()
    }

    /// Expires old dedup entries; called at the start of every flush, off the resolve path.
    fn sweep_dedup(&self) {
        let now = (self.clock)().seconds;
        lock(&self.dedup).table.sweep(now);
    }

    /// Dedup counters since the previous report, when dedup is on and anything moved.
    fn dedup_telemetry(&self) -> Option<ApplyDedupTelemetry> {
        let mut d = lock(&self.dedup);
        if !d.enabled {
            return None;
        }
        let current = d.table.telemetry_snapshot();
        let delta = current.delta_to_report(&d.reported);
        d.reported = current;
        delta
    }

    // ---- what the crate calls back into, through `CoreHost` ----------------------------

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn log_resolve(
        &self,
        state: &Arc<ResolverState>,
        resolve_id: &str,
        context: &Struct,
        values: &[ResolvedValue<'_>],
        client: &Client,
    ) {
        let deferred = self.sink.as_ref().is_some_and(|s| s.defer(state, resolve_id, context, values, client));
        if !deferred {
            log_resolve_to(&self.resolve_logger, resolve_id, context, values, client);
        }
    }

    fn log_assign(&self, resolve_id: &str, assigned_flags: &[FlagToApply<'_>], client: &Client, sdk: &Option<Sdk>) {
        // An empty batch still produces its envelope (docs/log-upload.md, "What a batch contains").
        let Some(first) = assigned_flags.first() else {
            self.assign_logger.log_assigns(resolve_id, assigned_flags, client, sdk);
            return;
        };
        let kept = {
            let mut d = lock(&self.dedup);
            if !d.enabled {
                None
            } else {
                let now = first.skew_adjusted_applied_time.seconds;
                Some(d.table.filter_duplicates(assigned_flags, now).collect(assigned_flags))
            }
        };
        match kept {
            None => self.assign_logger.log_assigns(resolve_id, assigned_flags, client, sdk),
            Some(kept) if kept.is_empty() => {}
            Some(kept) => self.assign_logger.log_assigns(resolve_id, &kept, client, sdk),
        }
    }
}

/// Seeds the RNG behind resolve ids and schema sampling on the calling thread.
pub fn init_thread(request: &InitThreadRequest) -> OpResult<Void> {
    confidence_resolver::seed_rng(request.rng_seed);
    Ok(Void {})
}

/// The crate's "unknown secret" message, built without its byte slicing so that secrets with
/// multi-byte characters get the same answer instead of a panic (fixtures' oracle README).
fn unknown_secret(requested: &str, state: &ResolverState) -> String {
    fn mask(s: &str) -> String {
        let b = s.as_bytes();
        if b.len() <= 6 {
            return "***".to_string();
        }
        let head = String::from_utf8_lossy(&b[..3]);
        let tail = String::from_utf8_lossy(&b[b.len() - 3..]);
        format!("{head}...{tail}")
    }
    let available: Vec<String> = state.secrets.keys().map(|s| mask(s)).collect();
    format!("client secret not found: requested={}, available=[{}]", mask(requested), available.join(", "))
}
