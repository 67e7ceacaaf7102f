//! What the resolver crate needs from its environment, supplied inside the guest: the clock
//! (from the host import), and the process-wide loggers, dedup table and telemetry that
//! survive state swaps (RESOLVER-LOGS.md §0.1).

use std::cell::RefCell;
use std::sync::LazyLock;

use arc_swap::ArcSwap;
use confidence_resolver::apply_dedup::{ApplyDedup, ApplyDedupSnapshot};
use confidence_resolver::assign_logger::AssignLogger;
use confidence_resolver::proto::confidence::flags::resolver::v1::{telemetry_data::ApplyDedupTelemetry, Sdk};
use confidence_resolver::proto::google::{Struct, Timestamp};
use confidence_resolver::resolve_logger::ResolveLogger;
use confidence_resolver::telemetry::{Telemetry, TelemetrySnapshot};
use confidence_resolver::{Client, FlagToApply, Host, ResolvedValue};

/// Exposure de-duplication window and table size (RESOLVER-LOGS.md §3.6).
const DEDUP_TTL_SECONDS: i64 = 120;
const DEDUP_CAPACITY: usize = 100_000;

pub static RESOLVE_LOGGER: LazyLock<ResolveLogger<GuestHost>> = LazyLock::new(ResolveLogger::new);
pub static ASSIGN_LOGGER: LazyLock<AssignLogger> = LazyLock::new(AssignLogger::new);
pub static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| Telemetry::with_memory_provider(linear_memory_bytes));
/// The cumulative snapshot taken at the previous flush (all zeros before the first), so each
/// flush reports what happened since the one before.
pub static TELEMETRY_AT_LAST_FLUSH: LazyLock<ArcSwap<TelemetrySnapshot>> =
    LazyLock::new(|| ArcSwap::from_pointee(TelemetrySnapshot::default()));

struct Dedup {
    enabled: bool,
    table: ApplyDedup,
    reported: ApplyDedupSnapshot,
}

thread_local! {
    // The guest is single-threaded; a RefCell is enough and costs nothing.
    static DEDUP: RefCell<Dedup> = RefCell::new(Dedup {
        enabled: false,
        table: ApplyDedup::new(DEDUP_TTL_SECONDS, DEDUP_CAPACITY),
        reported: ApplyDedupSnapshot::default(),
    });
}

/// Turns exposure de-duplication on or off; the table itself outlives the switch.
pub fn set_apply_dedup(enabled: bool) {
    DEDUP.with(|d| d.borrow_mut().enabled = enabled);
}

/// Expires old dedup entries; called at the start of every flush, off the resolve path.
pub fn sweep_dedup() {
    let now = now().seconds;
    DEDUP.with(|d| d.borrow_mut().table.sweep(now));
}

/// Dedup counters since the previous report, when dedup is on and anything moved.
pub fn dedup_telemetry() -> Option<ApplyDedupTelemetry> {
    DEDUP.with(|d| {
        let mut d = d.borrow_mut();
        if !d.enabled {
            return None;
        }
        let current = d.table.telemetry_snapshot();
        let delta = current.delta_to_report(&d.reported);
        d.reported = current;
        delta
    })
}

fn linear_memory_bytes() -> u64 {
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

pub struct GuestHost;

impl Host for GuestHost {
    fn current_time() -> Timestamp {
        now()
    }

    fn log_resolve(resolve_id: &str, evaluation_context: &Struct, values: &[ResolvedValue<'_>], client: &Client) {
        RESOLVE_LOGGER.log_resolve(resolve_id, evaluation_context, &client.client_credential_name, values, client);
    }

    fn log_assign(resolve_id: &str, assigned_flags: &[FlagToApply<'_>], client: &Client, sdk: &Option<Sdk>) {
        // An empty batch still produces its envelope (RESOLVER-LOGS.md §9 item 7).
        let Some(first) = assigned_flags.first() else {
            ASSIGN_LOGGER.log_assigns(resolve_id, assigned_flags, client, sdk);
            return;
        };
        let kept = DEDUP.with(|d| {
            let mut d = d.borrow_mut();
            if !d.enabled {
                return None;
            }
            let now = first.skew_adjusted_applied_time.seconds;
            Some(d.table.filter_duplicates(assigned_flags, now).collect(assigned_flags))
        });
        match kept {
            None => ASSIGN_LOGGER.log_assigns(resolve_id, assigned_flags, client, sdk),
            Some(kept) if kept.is_empty() => {}
            Some(kept) => ASSIGN_LOGGER.log_assigns(resolve_id, &kept, client, sdk),
        }
    }

    // Tokens never leave the host process, so the guest does not encrypt them (RESOLVER-LOGS.md §3.3).
    fn encrypt_resolve_token(token: &[u8], _key: &[u8]) -> Result<Vec<u8>, String> {
        Ok(token.to_vec())
    }

    fn decrypt_resolve_token(token: &[u8], _key: &[u8]) -> Result<Vec<u8>, String> {
        Ok(token.to_vec())
    }
}
