//! The resolver guest: Confidence's `confidence_resolver` crate behind the `wasm_msg` ABI of
//! docs/guest-abi.md, export for export, so this module and Confidence's released
//! `confidence_resolver.wasm` can stand in for each other in any host.
//!
//! One deliberate difference: where the released binary traps on bad input (a malformed
//! envelope, an unknown secret whose mask would split a UTF-8 character), this guest answers
//! with an error response and keeps serving.

mod host;
mod memory;

use std::sync::LazyLock;

use confidence_proto::{
    response, InitThreadRequest, PrometheusSnapshotRequest, PrometheusSnapshotResponse, Request, Response,
    SetResolverStateRequest, Void,
};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ApplyFlagsRequest, RegisterResolveRequest, ResolveProcessRequest, ResolveProcessResponse, WriteFlagLogsRequest,
};
use confidence_resolver_core::{Core, OpResult};
use prost::Message;

/// The guest's one resolver: the module is single-threaded and an instance is one resolver.
static CORE: LazyLock<Core> = LazyLock::new(|| Core::new(host::now, host::linear_memory_bytes));

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

// The operations themselves live in `confidence_resolver_core`, shared with the native engine.

fn set_resolver_state(request: SetResolverStateRequest) -> OpResult<Void> {
    CORE.set_resolver_state(&request)
}

fn resolve_flags(request: ResolveProcessRequest) -> OpResult<ResolveProcessResponse> {
    CORE.resolve_flags(request)
}

fn apply_flags(request: ApplyFlagsRequest) -> OpResult<Void> {
    CORE.apply_flags(&request)
}

fn register_resolve(request: RegisterResolveRequest) -> OpResult<Void> {
    CORE.register_resolve(request)
}

fn bounded_flush_logs(_: Void) -> OpResult<WriteFlagLogsRequest> {
    Ok(CORE.bounded_flush_logs())
}

fn bounded_flush_assign(_: Void) -> OpResult<WriteFlagLogsRequest> {
    Ok(CORE.bounded_flush_assign())
}

/// Deprecated by the bounded flushes; kept because the ABI lists it.
fn flush_logs(_: Void) -> OpResult<WriteFlagLogsRequest> {
    Ok(CORE.flush_logs())
}

fn prometheus_snapshot(request: PrometheusSnapshotRequest) -> OpResult<PrometheusSnapshotResponse> {
    Ok(CORE.prometheus_snapshot(&request))
}

fn init_thread(request: InitThreadRequest) -> OpResult<Void> {
    confidence_resolver_core::init_thread(&request)
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
