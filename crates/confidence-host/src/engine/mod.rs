//! The resolver behind one small trait, so sync, upload and the JS surface never care whether
//! flags are resolved by a wasm guest (`wasm.rs`) or by the crate linked in directly
//! (`native.rs`). Both run the same operations (crate `confidence-resolver-core`).

mod deferred_log;
pub mod native;
pub mod wasm;

use confidence_proto::SetResolverStateRequest;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ApplyFlagsRequest, ResolveFlagsRequest, ResolveProcessRequest, ResolveProcessResponse, WriteFlagLogsRequest,
};

use crate::guest::GuestError;

/// The resolver refuses a request that would return more flags than this.
pub const MAX_FLAGS_PER_RESOLVE: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No state has been loaded yet: evaluations answer PROVIDER_NOT_READY.
    #[error("no resolver state loaded yet")]
    NotReady,
    /// The provider was closed: evaluations answer PROVIDER_NOT_READY, as OpenFeature's SDK
    /// does after close.
    #[error("the provider is closed")]
    Closed,
    /// The resolver refused the input (unknown secret, bad continuation, ...).
    #[error("{0}")]
    Resolver(String),
    /// The resolver failed inside: a wasm guest trapped, timed out or broke the ABI (its
    /// instance has been replaced), or the natively linked crate panicked (caught; the engine
    /// keeps its state and serves on).
    #[error("resolver crashed: {0}")]
    Crashed(String),
    /// A new instance could not be created (module or memory limits).
    #[error("cannot create a resolver instance: {0}")]
    Instance(String),
}

impl From<GuestError> for EngineError {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::Resolver(m) => EngineError::Resolver(m),
            e if e.poisons_instance() => EngineError::Crashed(e.to_string()),
            e => EngineError::Instance(e.to_string()),
        }
    }
}

/// Flush calls per drain at most; each returns up to ~4 MiB of exposures.
pub(crate) const MAX_DRAIN_ROUNDS: usize = 64;
/// A flush answer this large means the resolver stopped at its ~4 MiB batch bound and more
/// may be waiting (docs/log-upload.md, "Batching and size bounds").
pub(crate) const FULL_BATCH_BYTES: usize = 3 << 20;

/// Whether a flush result carries anything worth an upload.
pub(crate) fn worth_uploading(batch: &WriteFlagLogsRequest) -> bool {
    let telemetry =
        batch.telemetry_data.as_ref().is_some_and(|t| t.resolve_latency.is_some() || !t.resolve_rate.is_empty());
    !batch.flag_assigned.is_empty()
        || !batch.client_resolve_info.is_empty()
        || !batch.flag_resolve_info.is_empty()
        || telemetry
}

/// What an engine reports about itself, merged into the host's metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineMetrics {
    pub instances: usize,
    /// Sum of all instances' linear memory.
    pub guest_memory_bytes: u64,
    pub state_loads: u64,
    pub traps: u64,
    pub recycles: u64,
    /// Serialized log batches waiting in the engine (salvaged from retired instances).
    pub pending_log_batches: usize,
}

/// A flag resolver. Implementations are shared across threads: evaluations may run on the JS
/// thread while state loads and flushes run on background threads.
pub trait Engine: Send + Sync {
    /// Installs a new state. Evaluations keep using the previous one until this returns; a
    /// state the resolver rejects is an error and changes nothing.
    fn load_state(&self, request: &SetResolverStateRequest) -> Result<(), EngineError>;

    /// Takes the request by value: the natively linked crate consumes it, so no copy of the
    /// context is made per evaluation.
    fn resolve(&self, request: ResolveProcessRequest) -> Result<ResolveProcessResponse, EngineError>;

    /// Every flag the client may resolve, for `request` (its `flags` ignored), in as many
    /// resolves of at most [`MAX_FLAGS_PER_RESOLVE`] flags as the state needs, all on the same
    /// state. A state of at most that many flags is one resolve, as `resolve` makes it.
    fn resolve_all(&self, request: ResolveFlagsRequest) -> Result<Vec<ResolveProcessResponse>, EngineError>;

    /// Records exposure for an earlier `apply = false` resolve.
    fn apply(&self, request: &ApplyFlagsRequest) -> Result<(), EngineError>;

    /// Telemetry: one evaluation's outcome and latency. Best effort.
    fn register_resolve(&self, reason: i32, latency_us: u32);

    /// Drains everything that is due: resolve logs, telemetry and exposures (bounded to
    /// ~4 MiB of exposures per batch). Each item is one serialized `WriteFlagLogsRequest`,
    /// to be uploaded as one request; empty batches are left out.
    fn flush_logs(&self) -> Vec<Vec<u8>>;

    /// Drains only exposures, and only once a full ~4 MiB batch is waiting.
    fn flush_assign(&self) -> Vec<Vec<u8>>;

    /// Off the evaluation path: replaces instances that grew past their memory bound.
    fn maintain(&self);

    /// Ends the engine's own threads (a closed provider may stay referenced for a long time).
    /// The engine still answers afterwards and loses no log; it just does all work inline.
    fn close(&self) {}

    fn metrics(&self) -> EngineMetrics;

    /// The resolver's own Prometheus text (latency histogram, resolves by reason, memory).
    fn prometheus(&self, instance: &str) -> String;
}
