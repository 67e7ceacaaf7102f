//! The wasm engine: a small pool of guest instances of one compiled module.
//!
//! Evaluations take whichever instance is free (try-lock, round robin), so background work on
//! one instance never blocks them. New state is loaded into *fresh* instances off the
//! evaluation path and swapped in; the retired instances are drained of their logs after they
//! left the pool, so a swap holds a pool lock only for the pointer exchange. Instances that
//! trap are replaced at once (their logs salvaged where the guest still answers); instances
//! whose linear memory passed the recycle bound are replaced by `maintain`, off the
//! evaluation path. Linear memory never shrinks, so replacing is the only way to give it back.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use confidence_proto::{
    InitThreadRequest, PrometheusSnapshotRequest, PrometheusSnapshotResponse, SetResolverStateRequest, Void,
};
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ApplyFlagsRequest, RegisterResolveRequest, ResolveFlagsRequest, ResolveProcessRequest, ResolveProcessResponse,
    WriteFlagLogsRequest,
};
use prost::Message;

use super::{
    worth_uploading, Engine, EngineError, EngineMetrics, FULL_BATCH_BYTES, MAX_DRAIN_ROUNDS, MAX_FLAGS_PER_RESOLVE,
};
use crate::guest::{Clock, ErasedMessage, Export, Guest, GuestError, GuestModule, Limits};

/// How far an instance's linear memory may grow before `maintain` replaces it.
pub const DEFAULT_RECYCLE_MEMORY_BYTES: u64 = 128 << 20;
/// Instances per engine: one for evaluations while another is flushed.
pub const DEFAULT_POOL_SIZE: usize = 2;

#[derive(Clone, Debug)]
pub struct WasmEngineConfig {
    pub pool_size: usize,
    pub limits: Limits,
    pub recycle_memory_bytes: u64,
    pub clock: Clock,
}

impl Default for WasmEngineConfig {
    fn default() -> Self {
        WasmEngineConfig {
            pool_size: DEFAULT_POOL_SIZE,
            limits: Limits::default(),
            recycle_memory_bytes: DEFAULT_RECYCLE_MEMORY_BYTES,
            clock: Clock::System,
        }
    }
}

struct Slot {
    guest: Mutex<Guest>,
    /// Linear memory after the last call, readable without the lock.
    memory: AtomicU64,
    recycle: AtomicBool,
}

pub struct WasmEngine {
    module: GuestModule,
    config: WasmEngineConfig,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    /// The framed `SetResolverStateRequest` of the last good state, for new instances.
    state: Mutex<Option<Arc<Vec<u8>>>>,
    /// Set once a state is in force: the lock-free answer to "ready?" on the hot path.
    loaded: AtomicBool,
    /// The flag names of the state in force, for `resolve_all` on states of many flags.
    flag_names: Mutex<Arc<Vec<String>>>,
    /// Serialises state loads and maintenance with each other (never with evaluations).
    maintenance: Mutex<()>,
    /// Log batches drained from retired or broken instances, waiting for the next flush.
    salvaged: Mutex<Vec<Vec<u8>>>,
    state_loads: AtomicU64,
    traps: AtomicU64,
    recycles: AtomicU64,
}

/// A poisoned mutex only means a panic happened while it was held; the guest inside is then
/// replaced by the trap path if it misbehaves, so carrying on is sound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WasmEngine {
    pub fn new(module: GuestModule, config: WasmEngineConfig) -> Result<Self, EngineError> {
        let size = config.pool_size.max(1);
        let mut slots = Vec::with_capacity(size);
        for _ in 0..size {
            let guest = Self::instance(&module, &config, None)?;
            slots.push(Slot {
                memory: AtomicU64::new(guest.memory_bytes()),
                guest: Mutex::new(guest),
                recycle: false.into(),
            });
        }
        Ok(WasmEngine {
            module,
            config,
            slots: slots.into_boxed_slice(),
            next: AtomicUsize::new(0),
            state: Mutex::new(None),
            loaded: AtomicBool::new(false),
            flag_names: Mutex::new(Arc::new(Vec::new())),
            maintenance: Mutex::new(()),
            salvaged: Mutex::new(Vec::new()),
            state_loads: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            recycles: AtomicU64::new(0),
        })
    }

    /// A fresh instance with its RNG seeded (so resolve ids differ between instances) and,
    /// when given, the framed state loaded.
    /// Not ready is known here (no state loaded yet), not read from a guest's error text:
    /// another binary may word it differently.
    fn ready(&self) -> Result<(), EngineError> {
        match self.loaded.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(EngineError::NotReady),
        }
    }

    fn instance(module: &GuestModule, config: &WasmEngineConfig, state: Option<&[u8]>) -> Result<Guest, EngineError> {
        let mut guest =
            module.instantiate(config.limits, config.clock).map_err(|e| EngineError::Instance(e.to_string()))?;
        if module.has_export(Export::InitThread) {
            let rng_seed = RandomState::new().hash_one(std::time::SystemTime::now());
            guest.call::<Void>(Export::InitThread, Some(&InitThreadRequest { rng_seed }))?;
        }
        if let Some(state) = state {
            guest.call_raw(Export::SetResolverState, Some(state))?;
        }
        Ok(guest)
    }

    fn fresh(&self) -> Result<Guest, EngineError> {
        let state = lock(&self.state).clone();
        Self::instance(&self.module, &self.config, state.as_deref().map(Vec::as_slice))
    }

    /// A free instance if there is one, else waits for the next in turn.
    fn pick(&self) -> (usize, MutexGuard<'_, Guest>) {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            let i = (start + k) % n;
            if let Ok(g) = self.slots[i].guest.try_lock() {
                return (i, g);
            }
        }
        (start, lock(&self.slots[start].guest))
    }

    /// Runs one guest call on whichever pooled instance is free.
    fn with_guest<T>(&self, f: impl FnOnce(&mut Guest) -> Result<T, GuestError>) -> Result<T, EngineError> {
        let (i, guest) = self.pick();
        self.run(i, guest, f)
    }

    /// Runs one guest call on instance `i`, replacing the instance if the call broke it.
    fn with_slot<T>(&self, i: usize, f: impl FnOnce(&mut Guest) -> Result<T, GuestError>) -> Result<T, EngineError> {
        self.run(i, lock(&self.slots[i].guest), f)
    }

    fn run<T>(
        &self,
        i: usize,
        mut guest: MutexGuard<'_, Guest>,
        f: impl FnOnce(&mut Guest) -> Result<T, GuestError>,
    ) -> Result<T, EngineError> {
        let result = f(&mut guest);
        match result {
            Err(e) if e.poisons_instance() => {
                self.traps.fetch_add(1, Ordering::Relaxed);
                let broken = std::mem::replace(&mut *guest, self.fresh()?);
                self.slots[i].memory.store(guest.memory_bytes(), Ordering::Relaxed);
                drop(guest);
                // The broken instance is out of the pool: salvage what it still answers.
                self.drain(broken);
                Err(e.into())
            }
            other => {
                let memory = guest.memory_bytes();
                self.slots[i].memory.store(memory, Ordering::Relaxed);
                if memory > self.config.recycle_memory_bytes {
                    self.slots[i].recycle.store(true, Ordering::Relaxed);
                }
                other.map_err(EngineError::from)
            }
        }
    }

    /// Swaps `guest` into slot `i` and drains the instance it replaces, outside the lock.
    fn swap_in(&self, i: usize, guest: Guest) {
        let slot = &self.slots[i];
        slot.memory.store(guest.memory_bytes(), Ordering::Relaxed);
        slot.recycle.store(false, Ordering::Relaxed);
        let retired = std::mem::replace(&mut *lock(&slot.guest), guest);
        self.drain(retired);
    }

    /// Moves every pending log of an instance that left the pool into `salvaged`.
    fn drain(&self, mut guest: Guest) {
        for _ in 0..MAX_DRAIN_ROUNDS {
            let Ok(bytes) = guest.call_raw(Export::BoundedFlushLogs, None) else { return };
            let Ok(batch) = WriteFlagLogsRequest::decode(bytes.as_slice()) else { return };
            let more = !batch.flag_assigned.is_empty();
            if worth_uploading(&batch) {
                lock(&self.salvaged).push(bytes);
            }
            if !more {
                return;
            }
        }
    }

    /// Calls `export` on every instance, again while an instance answers with a (nearly)
    /// full batch, so a burst larger than one batch leaves in one flush. Each call takes the
    /// instance's lock on its own: evaluations wait at most one guest call.
    fn flush_each(&self, export: Export) -> Vec<Vec<u8>> {
        let mut out = std::mem::take(&mut *lock(&self.salvaged));
        for i in 0..self.slots.len() {
            for _ in 0..MAX_DRAIN_ROUNDS {
                match self.with_slot(i, |g| g.call_raw(export, None)) {
                    Ok(bytes) => {
                        let full = bytes.len() >= FULL_BATCH_BYTES;
                        if WriteFlagLogsRequest::decode(bytes.as_slice()).is_ok_and(|b| worth_uploading(&b)) {
                            out.push(bytes);
                        }
                        if !full {
                            break;
                        }
                    }
                    // A broken instance was replaced and drained into `salvaged`.
                    Err(_) => {
                        out.append(&mut lock(&self.salvaged));
                        break;
                    }
                }
            }
        }
        out
    }
}

impl Engine for WasmEngine {
    fn load_state(&self, request: &SetResolverStateRequest) -> Result<(), EngineError> {
        let _serial = lock(&self.maintenance);
        let framed = Arc::new(request.encode_envelope());
        // Build every instance first: a rejected state fails here and changes nothing, and
        // the swaps below happen back to back.
        let mut fresh = Vec::with_capacity(self.slots.len());
        for _ in 0..self.slots.len() {
            fresh.push(Self::instance(&self.module, &self.config, Some(&framed))?);
        }
        let mut names: Vec<String> = ResolverStatePb::decode(request.state.as_slice())
            .map(|s| s.flags.into_iter().map(|f| f.name).collect())
            .unwrap_or_default();
        names.sort();
        *lock(&self.state) = Some(framed);
        *lock(&self.flag_names) = Arc::new(names);
        for (i, guest) in fresh.into_iter().enumerate() {
            self.swap_in(i, guest);
        }
        self.loaded.store(true, Ordering::Release);
        self.state_loads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn resolve(&self, request: ResolveProcessRequest) -> Result<ResolveProcessResponse, EngineError> {
        self.ready()?;
        self.with_guest(|g| g.call(Export::ResolveFlags, Some(&request)))
    }

    /// One instance answers every part, so all parts see its state. (Names come from the
    /// state loaded last: during a swap a part may ask for a flag its instance does not know
    /// yet, which the resolver skips.)
    fn resolve_all(&self, request: ResolveFlagsRequest) -> Result<Vec<ResolveProcessResponse>, EngineError> {
        self.ready()?;
        let names = lock(&self.flag_names).clone();
        if names.len() <= MAX_FLAGS_PER_RESOLVE {
            let all =
                ResolveProcessRequest::without_materializations(ResolveFlagsRequest { flags: Vec::new(), ..request });
            return Ok(vec![self.resolve(all)?]);
        }
        self.with_guest(|g| {
            names
                .chunks(MAX_FLAGS_PER_RESOLVE)
                .map(|part| {
                    let one = ResolveFlagsRequest { flags: part.to_vec(), ..request.clone() };
                    g.call(Export::ResolveFlags, Some(&ResolveProcessRequest::without_materializations(one)))
                })
                .collect()
        })
    }

    fn apply(&self, request: &ApplyFlagsRequest) -> Result<(), EngineError> {
        self.ready()?;
        self.with_guest(|g| g.call::<Void>(Export::ApplyFlags, Some(request))).map(|_| ())
    }

    fn register_resolve(&self, reason: i32, latency_us: u32) {
        let request = RegisterResolveRequest { reason, latency_us };
        let _ = self.with_guest(|g| g.call::<Void>(Export::RegisterResolve, Some(&request)));
    }

    fn flush_logs(&self) -> Vec<Vec<u8>> {
        self.flush_each(Export::BoundedFlushLogs)
    }

    fn flush_assign(&self) -> Vec<Vec<u8>> {
        self.flush_each(Export::BoundedFlushAssign)
    }

    fn maintain(&self) {
        let _serial = lock(&self.maintenance);
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.recycle.load(Ordering::Relaxed) {
                if let Ok(guest) = self.fresh() {
                    self.swap_in(i, guest);
                    self.recycles.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn metrics(&self) -> EngineMetrics {
        EngineMetrics {
            instances: self.slots.len(),
            guest_memory_bytes: self.slots.iter().map(|s| s.memory.load(Ordering::Relaxed)).sum(),
            state_loads: self.state_loads.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            recycles: self.recycles.load(Ordering::Relaxed),
            pending_log_batches: lock(&self.salvaged).len(),
        }
    }

    fn prometheus(&self, instance: &str) -> String {
        let mut text = String::new();
        for i in 0..self.slots.len() {
            let request = PrometheusSnapshotRequest { instance: format!("{instance}-{i}"), ..Default::default() };
            let snapshot =
                self.with_slot(i, |g| g.call::<PrometheusSnapshotResponse>(Export::PrometheusSnapshot, Some(&request)));
            if let Ok(s) = snapshot {
                text.push_str(&s.text);
            }
        }
        text
    }
}
