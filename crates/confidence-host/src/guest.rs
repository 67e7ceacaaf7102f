//! Runs a resolver guest module (ours or any binary with Confidence's ABI, docs/guest-abi.md) in
//! wasmtime: compile once, instantiate with limits, and call exports with the
//! length-prefixed `Request`/`Response` framing.
//!
//! A [`GuestModule`] is compiled and validated once and is cheap to clone; each [`Guest`] owns
//! its own `Store`, so dropping a guest frees everything it allocated (wasmtime stores never
//! free instances early). A guest that trapped must be dropped: its memory may be half-written.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use confidence_proto::{response, Response};
use confidence_resolver::proto::google::Timestamp;
use prost::Message;
use wasmtime::{
    Caller, Config, Engine, ExternType, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc, ValType,
};

/// How often the shared epoch ticker advances; a guest call's deadline is counted in ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);
const IMPORT_MODULE: &str = "wasm_msg";

/// The exports a host calls (docs/guest-abi.md, "Imports and exports"). `init_thread` and `flush_logs` are optional:
/// no official host relies on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Export {
    InitThread,
    SetResolverState,
    ResolveFlags,
    RegisterResolve,
    ApplyFlags,
    BoundedFlushLogs,
    BoundedFlushAssign,
    FlushLogs,
    PrometheusSnapshot,
}

impl Export {
    pub const ALL: [Export; 9] = [
        Export::InitThread,
        Export::SetResolverState,
        Export::ResolveFlags,
        Export::RegisterResolve,
        Export::ApplyFlags,
        Export::BoundedFlushLogs,
        Export::BoundedFlushAssign,
        Export::FlushLogs,
        Export::PrometheusSnapshot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Export::InitThread => "wasm_msg_guest_init_thread",
            Export::SetResolverState => "wasm_msg_guest_set_resolver_state",
            Export::ResolveFlags => "wasm_msg_guest_resolve_flags",
            Export::RegisterResolve => "wasm_msg_guest_register_resolve",
            Export::ApplyFlags => "wasm_msg_guest_apply_flags",
            Export::BoundedFlushLogs => "wasm_msg_guest_bounded_flush_logs",
            Export::BoundedFlushAssign => "wasm_msg_guest_bounded_flush_assign",
            Export::FlushLogs => "wasm_msg_guest_flush_logs",
            Export::PrometheusSnapshot => "wasm_msg_guest_prometheus_snapshot",
        }
    }

    fn required(self) -> bool {
        !matches!(self, Export::InitThread | Export::FlushLogs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("not a usable wasm module: {0}")]
    InvalidModule(String),
    #[error("the module is not a Confidence resolver: missing export `{0}`")]
    MissingExport(&'static str),
    #[error("the module is not a Confidence resolver: export `{name}` has the wrong type ({found})")]
    WrongExportType { name: &'static str, found: String },
    #[error("the module cannot be instantiated: {0}")]
    Instantiate(String),
    #[error("the module does not export `{0}`")]
    Unsupported(&'static str),
    #[error("guest trapped in {export}: {reason}")]
    Trap { export: &'static str, reason: String },
    #[error("guest call {export} exceeded its time budget")]
    Timeout { export: &'static str },
    #[error("guest broke the ABI in {export}: {reason}")]
    Abi { export: &'static str, reason: String },
    /// The guest answered with an error response; the instance is healthy.
    #[error("{0}")]
    Resolver(String),
}

impl GuestError {
    /// Whether the instance must be discarded (docs/guest-abi.md, "Instances and threading"): traps, timeouts and ABI breaks
    /// leave its memory in an unknown state; error responses do not.
    pub fn poisons_instance(&self) -> bool {
        matches!(self, GuestError::Trap { .. } | GuestError::Timeout { .. } | GuestError::Abi { .. })
    }
}

/// Where a guest's `current_time` import reads the clock.
#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    /// A frozen instant, for reproducible tests.
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(self) -> Timestamp {
        match self {
            Clock::Fixed(t) => t,
            Clock::System => {
                let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
            }
        }
    }
}

/// Per-instance bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest linear memory the guest may grow to.
    pub max_memory_bytes: usize,
    /// Wall-clock budget of one export call (a full state load takes tens of ms).
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_memory_bytes: 1 << 30, call_timeout: Duration::from_secs(5) }
    }
}

struct HostState {
    limits: StoreLimits,
    clock: Clock,
    alloc: Option<TypedFunc<i32, i32>>,
    free: Option<TypedFunc<i32, ()>>,
    memory: Option<Memory>,
}

/// A validated, compiled resolver module. Clone freely: clones share the compiled code.
#[derive(Clone)]
pub struct GuestModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    engine: Engine,
    pre: InstancePre<HostState>,
    has: [bool; Export::ALL.len()],
}

/// One engine per process: compiled code and the epoch ticker are shared by every module.
fn engine() -> Result<&'static Engine, GuestError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            // Diagnostics: `CONFIDENCE_WASM_PERFMAP=1` names guest frames for `perf`.
            if std::env::var_os("CONFIDENCE_WASM_PERFMAP").is_some() {
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            let engine = Engine::new(&config).map_err(|e| e.to_string())?;
            let ticker = engine.weak();
            // A daemon thread: it never keeps the process alive and ends with it.
            std::thread::Builder::new()
                .name("confidence-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|e| GuestError::InvalidModule(format!("wasmtime engine: {e}")))
}

impl GuestModule {
    /// Compiles and validates `bytes`: anything that is not wasm, lacks the ABI's exports or
    /// imports something the host does not provide fails here, not at the first evaluation.
    pub fn new(bytes: &[u8]) -> Result<Self, GuestError> {
        let engine = engine()?.clone();
        let module = Module::from_binary(&engine, bytes).map_err(|e| GuestError::InvalidModule(format!("{e:#}")))?;
        check_export(&module, "memory", |t| matches!(t, ExternType::Memory(_)), "a memory")?;
        check_func(&module, "wasm_msg_alloc", &[ValType::I32], &[ValType::I32])?;
        check_func(&module, "wasm_msg_free", &[ValType::I32], &[])?;
        let mut has = [false; Export::ALL.len()];
        for (i, export) in Export::ALL.into_iter().enumerate() {
            match check_func(&module, export.name(), &[ValType::I32], &[ValType::I32]) {
                Ok(()) => has[i] = true,
                Err(GuestError::MissingExport(_)) if !export.required() => {}
                Err(e) => return Err(e),
            }
        }
        let mut linker = Linker::<HostState>::new(&engine);
        linker
            .func_wrap(IMPORT_MODULE, "wasm_msg_host_current_time", host_current_time)
            .and_then(|l| l.func_wrap(IMPORT_MODULE, "wasm_msg_host_log_message", host_log_message))
            .map_err(|e| GuestError::Instantiate(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| GuestError::Instantiate(format!("{e:#}")))?;
        Ok(GuestModule { inner: Arc::new(ModuleInner { engine, pre, has }) })
    }

    /// `(module, name)` of every import the module declares; the ABI allows only `wasm_msg`'s
    /// `wasm_msg_host_current_time` and `wasm_msg_host_log_message`.
    pub fn imports(&self) -> Vec<(String, String)> {
        self.inner.pre.module().imports().map(|i| (i.module().to_string(), i.name().to_string())).collect()
    }

    pub fn has_export(&self, export: Export) -> bool {
        self.inner.has[export as usize]
    }

    /// A fresh instance with its own store, memory and guest-side state.
    pub fn instantiate(&self, limits: Limits, clock: Clock) -> Result<Guest, GuestError> {
        let host = HostState {
            limits: StoreLimitsBuilder::new().memory_size(limits.max_memory_bytes).instances(1).build(),
            clock,
            alloc: None,
            free: None,
            memory: None,
        };
        let mut store = Store::new(&self.inner.engine, host);
        store.limiter(|h| &mut h.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(limits.call_timeout));
        let instance = self.inner.pre.instantiate(&mut store).map_err(|e| GuestError::Instantiate(format!("{e:#}")))?;
        let abi = |e: wasmtime::Error| GuestError::Instantiate(format!("{e:#}"));
        let memory = instance.get_memory(&mut store, "memory").ok_or(GuestError::MissingExport("memory"))?;
        let alloc = instance.get_typed_func::<i32, i32>(&mut store, "wasm_msg_alloc").map_err(abi)?;
        let free = instance.get_typed_func::<i32, ()>(&mut store, "wasm_msg_free").map_err(abi)?;
        let mut exports = [const { None }; Export::ALL.len()];
        for (i, export) in Export::ALL.into_iter().enumerate() {
            if self.inner.has[i] {
                exports[i] = Some(instance.get_typed_func::<i32, i32>(&mut store, export.name()).map_err(abi)?);
            }
        }
        let data = store.data_mut();
        data.alloc = Some(alloc.clone());
        data.free = Some(free.clone());
        data.memory = Some(memory);
        Ok(Guest { store, memory, alloc, free, exports, budget: ticks(limits.call_timeout) })
    }
}

fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

fn check_export(
    module: &Module,
    name: &'static str,
    ok: impl Fn(&ExternType) -> bool,
    wanted: &str,
) -> Result<(), GuestError> {
    match module.get_export(name) {
        None => Err(GuestError::MissingExport(name)),
        Some(t) if ok(&t) => Ok(()),
        Some(t) => Err(GuestError::WrongExportType { name, found: format!("{t:?}, wanted {wanted}") }),
    }
}

fn check_func(module: &Module, name: &'static str, params: &[ValType], results: &[ValType]) -> Result<(), GuestError> {
    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
    };
    check_export(
        module,
        name,
        |t| match t {
            ExternType::Func(f) => same(&mut f.params(), params) && same(&mut f.results(), results),
            _ => false,
        },
        &format!("func {params:?} -> {results:?}"),
    )
}

/// `current_time`: consume the guest's request, answer `Response{data: Timestamp}` in a buffer
/// from the guest's own allocator (docs/guest-abi.md, "Host functions").
fn host_current_time(mut caller: Caller<'_, HostState>, request: i32) -> wasmtime::Result<i32> {
    free_in_guest(&mut caller, request)?;
    let now = caller.data().clock.now();
    let body = Response { result: Some(response::Result::Data(now.encode_to_vec())) }.encode_to_vec();
    write_in_guest(&mut caller, &body)
}

/// `log_message` (only linked when a module imports it): accepted and dropped; the host has no
/// logger at this layer and the released binaries never import it.
fn host_log_message(mut caller: Caller<'_, HostState>, request: i32) -> wasmtime::Result<i32> {
    free_in_guest(&mut caller, request)?;
    let body = Response { result: Some(response::Result::Data(Vec::new())) }.encode_to_vec();
    write_in_guest(&mut caller, &body)
}

fn free_in_guest(caller: &mut Caller<'_, HostState>, ptr: i32) -> wasmtime::Result<()> {
    if ptr != 0 {
        let free = caller.data().free.clone().ok_or_else(|| wasmtime::Error::msg("guest not ready"))?;
        free.call(&mut *caller, ptr)?;
    }
    Ok(())
}

fn write_in_guest(caller: &mut Caller<'_, HostState>, body: &[u8]) -> wasmtime::Result<i32> {
    let (alloc, memory) = match (caller.data().alloc.clone(), caller.data().memory) {
        (Some(a), Some(m)) => (a, m),
        _ => return Err(wasmtime::Error::msg("guest not ready")),
    };
    let ptr = alloc.call(&mut *caller, body.len() as i32)?;
    if ptr == 0 {
        return Err(wasmtime::Error::msg("guest allocation failed"));
    }
    memory.write(&mut *caller, ptr as u32 as usize, body)?;
    Ok(ptr)
}

/// One live instance. Not `Sync`: callers serialise access (a guest is single-threaded).
pub struct Guest {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<i32, ()>,
    exports: [Option<TypedFunc<i32, i32>>; Export::ALL.len()],
    budget: u64,
}

impl Guest {
    /// Calls `export` with `request` (None sends the null pointer, i.e. the default message)
    /// and decodes its answer.
    pub fn call<Resp: Message + Default>(
        &mut self,
        export: Export,
        request: Option<&dyn ErasedMessage>,
    ) -> Result<Resp, GuestError> {
        let envelope = request.map(|r| r.encode_envelope());
        let data = self.call_raw(export, envelope.as_deref())?;
        Resp::decode(data.as_slice())
            .map_err(|e| GuestError::Abi { export: export.name(), reason: format!("undecodable response: {e}") })
    }

    /// Sends already-framed `Request` bytes (or null) and returns the `data` of a successful
    /// `Response`. Exposed so tests can send bytes no well-behaved host would.
    pub fn call_raw(&mut self, export: Export, envelope: Option<&[u8]>) -> Result<Vec<u8>, GuestError> {
        let name = export.name();
        let func = self.exports[export as usize].clone().ok_or(GuestError::Unsupported(name))?;
        self.store.set_epoch_deadline(self.budget);
        let arg = match envelope {
            None => 0,
            Some(bytes) => self.write(name, bytes)?,
        };
        let ptr = func.call(&mut self.store, arg).map_err(|e| trap(name, e))?;
        if ptr == 0 {
            return Err(GuestError::Abi { export: name, reason: "guest returned null".into() });
        }
        let bytes = self.read(name, ptr)?;
        self.free.call(&mut self.store, ptr).map_err(|e| trap(name, e))?;
        let response = Response::decode(bytes.as_slice())
            .map_err(|e| GuestError::Abi { export: name, reason: format!("undecodable envelope: {e}") })?;
        match response.result {
            Some(response::Result::Error(e)) if !e.is_empty() => Err(GuestError::Resolver(e)),
            Some(response::Result::Data(d)) => Ok(d),
            _ => Ok(Vec::new()),
        }
    }

    /// Current size of the guest's linear memory; it only ever grows.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.data_size(&self.store) as u64
    }

    fn write(&mut self, name: &'static str, bytes: &[u8]) -> Result<i32, GuestError> {
        let len = i32::try_from(bytes.len())
            .map_err(|_| GuestError::Abi { export: name, reason: "request larger than 2 GiB".into() })?;
        let ptr = self.alloc.call(&mut self.store, len).map_err(|e| trap(name, e))?;
        if ptr == 0 {
            return Err(GuestError::Abi { export: name, reason: "guest could not allocate the request".into() });
        }
        self.memory
            .write(&mut self.store, ptr as u32 as usize, bytes)
            .map_err(|e| GuestError::Abi { export: name, reason: format!("request out of bounds: {e}") })?;
        Ok(ptr)
    }

    fn read(&self, name: &'static str, ptr: i32) -> Result<Vec<u8>, GuestError> {
        let mem = self.memory.data(&self.store);
        let at = ptr as u32 as usize;
        let header = at
            .checked_sub(4)
            .and_then(|h| mem.get(h..at))
            .ok_or_else(|| GuestError::Abi { export: name, reason: "response pointer out of bounds".into() })?;
        let total = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let len = total.checked_sub(4).ok_or_else(|| GuestError::Abi {
            export: name,
            reason: format!("response header {total} is smaller than itself"),
        })?;
        at.checked_add(len)
            .and_then(|end| mem.get(at..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| GuestError::Abi { export: name, reason: "response runs past memory".into() })
    }
}

fn trap(export: &'static str, e: wasmtime::Error) -> GuestError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestError::Timeout { export },
        Some(t) => GuestError::Trap { export, reason: t.to_string() },
        None => GuestError::Trap { export, reason: format!("{e:#}") },
    }
}

/// Object-safe encoding straight into a `Request` envelope, so `call` takes any request
/// message without generics at call sites, and the message is written once, not encoded and
/// then copied into an envelope.
pub trait ErasedMessage {
    fn encode_envelope(&self) -> Vec<u8>;
}

impl<M: Message> ErasedMessage for M {
    fn encode_envelope(&self) -> Vec<u8> {
        let len = self.encoded_len();
        if len == 0 {
            // `Request{data: ""}` is the empty message (docs/guest-abi.md, "Memory framing").
            return Vec::new();
        }
        // `Request.data` is field 1, length-delimited: tag 0x0a, varint length, the bytes.
        let mut out = Vec::with_capacity(1 + prost::length_delimiter_len(len) + len);
        out.push(0x0a);
        // Writing into a Vec cannot run out of space.
        let _ = self.encode_length_delimited(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confidence_proto::{Request, Void};
    use confidence_resolver::proto::confidence::flags::resolver::v1::RegisterResolveRequest;

    #[test]
    fn envelopes_match_the_abi_worked_bytes() {
        // docs/guest-abi.md, "Memory framing": RegisterResolveRequest{MATCH, 250} and `Request{Void}`.
        let r = RegisterResolveRequest { reason: 1, latency_us: 250 };
        assert_eq!(r.encode_envelope(), [0x0a, 0x05, 0x08, 0x01, 0x10, 0xfa, 0x01]);
        assert!(Void {}.encode_envelope().is_empty());
        let big = Request { data: vec![7; 300] };
        assert_eq!(big.encode_envelope(), Request { data: big.encode_to_vec() }.encode_to_vec());
    }
}
