//! The native engine: `confidence_resolver` linked into the addon, running the same operations
//! as the wasm guest (crate `confidence-resolver-core`), so answers and logs are the guest's
//! without a guest call per evaluation.
//!
//! One [`Core`] per engine, shared by all threads: a state load swaps an `Arc` (evaluations
//! never wait for it), loggers and telemetry are the crate's concurrent structures, and the
//! only locks are short ones (dedup table, flush order, the resolve-log queue). A panic in the
//! crate is caught and reported as [`EngineError::Crashed`]; it never unwinds into napi.
//! Optionally ([`NativeEngineConfig::defer_resolve_log`]) resolve logs are aggregated by a
//! worker thread instead of inside `resolve` (see `deferred_log.rs`).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use confidence_proto::{PrometheusSnapshotRequest, SetResolverStateRequest};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ApplyFlagsRequest, RegisterResolveRequest, ResolveFlagsRequest, ResolveProcessRequest, ResolveProcessResponse,
    WriteFlagLogsRequest,
};
use confidence_resolver_core::Core;
use prost::Message;

use super::deferred_log::{Counters, DeferredResolveLog, ResolveLogStopper};
use super::{
    worth_uploading, Engine, EngineError, EngineMetrics, FULL_BATCH_BYTES, MAX_DRAIN_ROUNDS, MAX_FLAGS_PER_RESOLVE,
};
use crate::guest::Clock;

/// Resolves waiting for the log worker at most (roughly 1 KiB each); beyond that a resolve is
/// logged inline, so a burst slows evaluations down instead of growing memory or losing logs.
pub const DEFAULT_RESOLVE_LOG_QUEUE: usize = 8192;

#[derive(Clone, Debug)]
pub struct NativeEngineConfig {
    pub clock: Clock,
    /// Aggregate resolve logs on a worker thread instead of inside `resolve`. Same logger,
    /// same content; a flush still contains every resolve made before it.
    pub defer_resolve_log: bool,
    /// Queue bound of the deferred resolve log (at least 1).
    pub resolve_log_queue: usize,
}

impl Default for NativeEngineConfig {
    fn default() -> Self {
        NativeEngineConfig {
            clock: Clock::System,
            defer_resolve_log: true,
            resolve_log_queue: DEFAULT_RESOLVE_LOG_QUEUE,
        }
    }
}

/// Where resolve logs went, when they are deferred (all zero when they are not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolveLogStats {
    /// Resolves whose log the worker thread aggregated.
    pub deferred: u64,
    /// Resolves logged inline because the queue was full.
    pub inline: u64,
}

pub struct NativeEngine {
    core: Core,
    state_loads: AtomicU64,
    panics: AtomicU64,
    resolve_log: Arc<Counters>,
    stopper: Option<ResolveLogStopper>,
}

impl NativeEngine {
    /// Not ready is known here (no state loaded yet), not read from the resolver's error text.
    fn ready(&self) -> Result<(), EngineError> {
        match self.state_loads.load(Ordering::Acquire) {
            0 => Err(EngineError::NotReady),
            _ => Ok(()),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload");
    format!("panic in the resolver: {text}")
}

impl NativeEngine {
    /// Fails only when the resolve-log worker thread cannot be started.
    pub fn new(config: NativeEngineConfig) -> Result<Self, EngineError> {
        let clock = config.clock;
        // No linear memory to report: the process's memory is not the resolver's alone.
        let mut core = Core::new(move || clock.now(), || 0);
        let resolve_log = Arc::new(Counters::default());
        let mut stopper = None;
        if config.defer_resolve_log {
            let logger = core.resolve_logger().clone();
            let (sink, stop) = DeferredResolveLog::spawn(logger, config.resolve_log_queue, resolve_log.clone())
                .map_err(|e| EngineError::Instance(format!("cannot start the resolve-log thread: {e}")))?;
            core = core.with_resolve_log_sink(Box::new(sink));
            stopper = Some(stop);
        }
        Ok(NativeEngine { core, state_loads: AtomicU64::new(0), panics: AtomicU64::new(0), resolve_log, stopper })
    }

    /// Whether the resolve-log worker thread runs (until [`Engine::close`]).
    pub fn has_log_thread(&self) -> bool {
        self.stopper.as_ref().is_some_and(ResolveLogStopper::running)
    }

    pub fn resolve_log_stats(&self) -> ResolveLogStats {
        ResolveLogStats {
            deferred: self.resolve_log.deferred.load(Ordering::Relaxed),
            inline: self.resolve_log.inline.load(Ordering::Relaxed),
        }
    }

    /// Runs `op`, turning a panic inside the crate into [`EngineError::Crashed`].
    fn guarded<T>(&self, op: impl FnOnce(&Core) -> T) -> Result<T, EngineError> {
        catch_unwind(AssertUnwindSafe(|| op(&self.core))).map_err(|payload| {
            self.panics.fetch_add(1, Ordering::Relaxed);
            EngineError::Crashed(panic_message(payload.as_ref()))
        })
    }

    /// Flushes with `flush` until a batch comes back below the full size.
    fn drain(&self, flush: impl Fn(&Core) -> WriteFlagLogsRequest) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..MAX_DRAIN_ROUNDS {
            let Ok(batch) = self.guarded(&flush) else { break };
            let bytes = batch.encode_to_vec();
            let full = bytes.len() >= FULL_BATCH_BYTES;
            if worth_uploading(&batch) {
                out.push(bytes);
            }
            if !full {
                break;
            }
        }
        out
    }
}

impl Engine for NativeEngine {
    fn load_state(&self, request: &SetResolverStateRequest) -> Result<(), EngineError> {
        self.guarded(|core| core.set_resolver_state(request))?.map_err(EngineError::Resolver)?;
        self.state_loads.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn resolve(&self, request: ResolveProcessRequest) -> Result<ResolveProcessResponse, EngineError> {
        self.ready()?;
        self.guarded(|core| core.resolve_flags(request))?.map_err(EngineError::Resolver)
    }

    fn resolve_all(&self, request: ResolveFlagsRequest) -> Result<Vec<ResolveProcessResponse>, EngineError> {
        self.ready()?;
        self.guarded(|core| core.resolve_all_flags(request, MAX_FLAGS_PER_RESOLVE))?.map_err(EngineError::Resolver)
    }

    fn apply(&self, request: &ApplyFlagsRequest) -> Result<(), EngineError> {
        self.ready()?;
        self.guarded(|core| core.apply_flags(request))?.map(|_| ()).map_err(EngineError::Resolver)
    }

    fn register_resolve(&self, reason: i32, latency_us: u32) {
        let _ = self.guarded(|core| core.register_resolve(RegisterResolveRequest { reason, latency_us }));
    }

    fn flush_logs(&self) -> Vec<Vec<u8>> {
        self.drain(Core::bounded_flush_logs)
    }

    fn flush_assign(&self) -> Vec<Vec<u8>> {
        self.drain(Core::bounded_flush_assign)
    }

    /// Nothing to recycle: memory is the process heap, given back as logs are flushed.
    fn maintain(&self) {}

    fn close(&self) {
        if let Some(stopper) = &self.stopper {
            stopper.stop();
        }
    }

    fn metrics(&self) -> EngineMetrics {
        EngineMetrics {
            instances: 1,
            guest_memory_bytes: 0,
            state_loads: self.state_loads.load(Ordering::Relaxed),
            traps: self.panics.load(Ordering::Relaxed),
            recycles: 0,
            pending_log_batches: 0,
        }
    }

    fn prometheus(&self, instance: &str) -> String {
        let request = PrometheusSnapshotRequest { instance: instance.to_string(), ..Default::default() };
        self.guarded(|core| core.prometheus_snapshot(&request).text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_reported_as_crashed_and_the_engine_serves_on() {
        let engine = NativeEngine::new(NativeEngineConfig::default()).expect("engine");
        let caught: Result<(), EngineError> = engine.guarded(|_| panic!("boom"));
        let err = caught.expect_err("caught");
        assert!(matches!(&err, EngineError::Crashed(m) if m.contains("boom")), "{err}");
        assert_eq!(engine.metrics().traps, 1);
        assert!(matches!(engine.resolve(ResolveProcessRequest::default()), Err(EngineError::NotReady)));
    }
}
