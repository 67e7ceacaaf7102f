//! What only the guest can supply to the shared core: the clock (from the host import) and the
//! size of its linear memory for telemetry. Loggers, dedup and telemetry live in the core.

use confidence_resolver::proto::google::Timestamp;

pub fn linear_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size::<0>() as u64).saturating_mul(65_536)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "wasm_msg")]
extern "C" {
    fn wasm_msg_host_current_time(request: *mut u8) -> *mut u8;
}

/// Wall-clock time from the host. The ABI says the import never fails; if a host breaks that
/// promise we fall back to the Unix epoch rather than trapping, so one bad clock read costs
/// a wrong timestamp, not the instance.
#[cfg(target_arch = "wasm32")]
pub fn now() -> Timestamp {
    use confidence_proto::{response, Response};
    use prost::Message;
    // `Request{Void}` encodes to zero bytes.
    let request = crate::memory::allocate(0);
    // SAFETY: the host consumes `request` and hands back a buffer allocated with our
    // `wasm_msg_alloc` (or null), which `take` consumes.
    let bytes = unsafe { crate::memory::take(wasm_msg_host_current_time(request)) };
    match Response::decode(bytes.as_slice()) {
        Ok(Response { result: Some(response::Result::Data(data)) }) => {
            Timestamp::decode(data.as_slice()).unwrap_or_default()
        }
        _ => Timestamp::default(),
    }
}

/// Native builds (unit tests of this crate) read the system clock.
#[cfg(not(target_arch = "wasm32"))]
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
}
