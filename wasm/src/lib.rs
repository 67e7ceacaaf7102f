//! The resolver guest: Confidence's `confidence_resolver` crate behind the `wasm_msg` ABI of
//! HOST.md §A, export for export, so this module and Confidence's released
//! `confidence_resolver.wasm` can stand in for each other in any host.
//!
//! One deliberate difference: where the released binary traps on bad input (a malformed
//! envelope, an unknown secret whose mask would split a UTF-8 character), this guest answers
//! with an error response and keeps serving.

mod host;
mod memory;

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use confidence_proto::{
    response, InitThreadRequest, PrometheusSnapshotRequest, PrometheusSnapshotResponse, Request, Response,
    SetResolverStateRequest, Void,
};
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    resolve_process_request::Resolve, ApplyFlagsRequest, RegisterResolveRequest, ResolveFlagsRequest,
    ResolveProcessRequest, ResolveProcessResponse, ResolveReason, WriteFlagLogsRequest,
};
use confidence_resolver::telemetry::PrometheusConfig;
use confidence_resolver::{ResolveProcessState, ResolverState};
use prost::Message;

use host::{GuestHost, ASSIGN_LOGGER, RESOLVE_LOGGER, TELEMETRY, TELEMETRY_AT_LAST_FLUSH};

/// Upper bound of one flush's assign entries (RESOLVER-LOGS.md §4.6).
const LOG_TARGET_BYTES: usize = 4 * 1024 * 1024;
/// Resolve tokens are not encrypted inside the guest; the crate still wants a key.
const TOKEN_KEY: Bytes = Bytes::from_static(&[0; 16]);

/// What `set_resolver_state` installs; replaced whole, so a resolve sees one consistent state.
struct Installed {
    state: Arc<ResolverState>,
    disable_exposure_collection: bool,
}

thread_local! {
    static INSTALLED: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

type OpResult<T> = Result<T, String>;

/// Runs one export: unwraps the `Request` envelope (a null pointer means the default message),
/// calls `op`, and wraps its outcome in a `Response`. Decoding failures become error responses.
fn serve<Req: Message + Default, Resp: Message>(request: *mut u8, op: impl FnOnce(Req) -> OpResult<Resp>) -> *mut u8 {
    // SAFETY: the host wrote `request` into a buffer from `wasm_msg_alloc` and hands it over.
    let bytes = unsafe { memory::take(request) };
    let outcome = Request::decode(bytes.as_slice())
        .map_err(|e| format!("Failed to decode request envelope: {e}"))
        .and_then(|envelope| {
            Req::decode(envelope.data.as_slice()).map_err(|e| format!("Failed to decode request: {e}"))
        })
        .and_then(op);
    let result = match outcome {
        Ok(message) => response::Result::Data(message.encode_to_vec()),
        Err(error) => response::Result::Error(error),
    };
    memory::give(&Response { result: Some(result) }.encode_to_vec())
}

fn installed() -> OpResult<(Arc<ResolverState>, bool)> {
    INSTALLED.with(|i| {
        i.borrow()
            .as_ref()
            .map(|i| (i.state.clone(), i.disable_exposure_collection))
            .ok_or_else(|| "Resolver state not set".to_string())
    })
}

/// The crate's "unknown secret" message, built without its byte slicing so that secrets with
/// multi-byte characters get the same answer instead of a trap (fixtures' oracle README).
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

fn set_resolver_state(request: SetResolverStateRequest) -> OpResult<Void> {
    let pb = ResolverStatePb::decode(request.state.as_slice())
        .map_err(|e| format!("Failed to decode resolver state: {e}"))?;
    let state = ResolverState::from_proto(pb, &request.account_id, request.sdk)?;
    host::set_apply_dedup(request.enable_apply_dedup);
    INSTALLED.with(|i| {
        *i.borrow_mut() =
            Some(Installed { state: Arc::new(state), disable_exposure_collection: request.disable_exposure_collection })
    });
    Ok(Void {})
}

fn resolve_flags(request: ResolveProcessRequest) -> OpResult<ResolveProcessResponse> {
    let (state, disable_exposure_collection) = installed()?;
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
        return Err(unknown_secret(secret, &state));
    }
    let context = resolve_request.evaluation_context.clone().unwrap_or_default();
    let resolver = state
        .get_resolver::<GuestHost>(secret, context, &TOKEN_KEY)?
        .with_disable_exposure_collection(disable_exposure_collection);
    resolver.resolve_flags(request)
}

fn apply_flags(request: ApplyFlagsRequest) -> OpResult<Void> {
    // As in the released binary: "state not set" is the one apply error without the prefix.
    let (state, disable_exposure_collection) = installed()?;
    let secret = request.client_secret.as_str();
    if !state.secrets.contains_key(secret) {
        return Err(format!("apply_flags: {}", unknown_secret(secret, &state)));
    }
    let resolver = state
        .get_resolver::<GuestHost>(secret, Default::default(), &TOKEN_KEY)?
        .with_disable_exposure_collection(disable_exposure_collection);
    resolver.apply_flags(&request).map_err(|e| format!("apply_flags: {e}"))?;
    Ok(Void {})
}

fn register_resolve(request: RegisterResolveRequest) -> OpResult<Void> {
    // Reasons this resolver does not know (e.g. a host's BUNDLE = 11) count as UNSPECIFIED.
    let reason = ResolveReason::try_from(request.reason).unwrap_or(ResolveReason::Unspecified);
    TELEMETRY.record_latency_us(request.latency_us);
    TELEMETRY.mark_resolve(reason);
    Ok(Void {})
}

fn bounded_flush_logs(_: Void) -> OpResult<WriteFlagLogsRequest> {
    host::sweep_dedup();
    let mut logs = RESOLVE_LOGGER.checkpoint();
    let mut telemetry = TELEMETRY.delta_snapshot(&TELEMETRY_AT_LAST_FLUSH);
    telemetry.sdk = installed().ok().and_then(|(state, _)| state.sdk.clone());
    telemetry.apply_dedup = host::dedup_telemetry();
    logs.telemetry_data = Some(telemetry);
    ASSIGN_LOGGER.checkpoint_fill_with_limit(&mut logs, LOG_TARGET_BYTES, false);
    Ok(logs)
}

fn bounded_flush_assign(_: Void) -> OpResult<WriteFlagLogsRequest> {
    host::sweep_dedup();
    Ok(ASSIGN_LOGGER.checkpoint_with_limit(LOG_TARGET_BYTES, true))
}

/// Deprecated by the bounded flushes; kept because the ABI lists it.
fn flush_logs(_: Void) -> OpResult<WriteFlagLogsRequest> {
    host::sweep_dedup();
    let mut logs = RESOLVE_LOGGER.checkpoint();
    ASSIGN_LOGGER.checkpoint_fill(&mut logs);
    Ok(logs)
}

fn prometheus_snapshot(request: PrometheusSnapshotRequest) -> OpResult<PrometheusSnapshotResponse> {
    let config = PrometheusConfig { buckets_per_decade: request.buckets_per_decade, openmetrics: request.openmetrics };
    Ok(PrometheusSnapshotResponse { text: TELEMETRY.snapshot().to_prometheus(&request.instance, &config) })
}

fn init_thread(request: InitThreadRequest) -> OpResult<Void> {
    confidence_resolver::seed_rng(request.rng_seed);
    Ok(Void {})
}

// ---- the exported ABI -------------------------------------------------------------------

#[no_mangle]
pub extern "C" fn wasm_msg_alloc(size: usize) -> *mut u8 {
    memory::allocate(size)
}

/// # Safety
/// `data` must be null or a live buffer from [`wasm_msg_alloc`].
#[no_mangle]
pub unsafe extern "C" fn wasm_msg_free(data: *mut u8) {
    memory::release(data)
}

macro_rules! exports {
    ($($export:ident => $op:ident),* $(,)?) => {$(
        #[no_mangle]
        pub extern "C" fn $export(request: *mut u8) -> *mut u8 {
            serve(request, $op)
        }
    )*};
}

exports! {
    wasm_msg_guest_init_thread => init_thread,
    wasm_msg_guest_set_resolver_state => set_resolver_state,
    wasm_msg_guest_resolve_flags => resolve_flags,
    wasm_msg_guest_register_resolve => register_resolve,
    wasm_msg_guest_apply_flags => apply_flags,
    wasm_msg_guest_bounded_flush_logs => bounded_flush_logs,
    wasm_msg_guest_bounded_flush_assign => bounded_flush_assign,
    wasm_msg_guest_flush_logs => flush_logs,
    wasm_msg_guest_prometheus_snapshot => prometheus_snapshot,
}
