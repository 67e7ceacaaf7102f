//! ns per single-flag resolve through our guest and, when `CONFIDENCE_OFFICIAL_WASM` names it,
//! through Confidence's released binary, both under the same wasmtime host in the same run;
//! then through the `Engine` trait as the addon calls it (request structs in, response structs
//! out): the wasm engine (one instance, so encoding and decoding included) and the native
//! engine with resolve logging inline and deferred to its worker thread.
//! A benchmark, not a test: it prints figures and ratios and asserts nothing.
//!
//!     cargo bench --bench guest_resolve [-- --quick]

use std::rc::Rc;
use std::time::Instant;

use confidence_host::engine::native::{NativeEngine, NativeEngineConfig};
use confidence_host::engine::wasm::{WasmEngine, WasmEngineConfig};
use confidence_host::engine::Engine;
use confidence_host::guest::{Clock, Export, Guest, GuestModule, Limits};
use confidence_proto::{SetResolverStateRequest, Void};
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    ResolveFlagsRequest, ResolveProcessRequest, ResolveProcessResponse, WriteFlagLogsRequest,
};
use confidence_resolver::proto::google::{value::Kind, Struct, Value};

const SECRET: &str = "mkjJruAATQWjeY7foFIWfVAcBWnci2YF";
const FLAG: &str = "flags/fallthrough-test-2";
const DISTINCT_KEYS: usize = 100_000;
/// Full log flush cadence inside the measured loop, identical for every contender.
const FLUSH_EVERY: usize = 1_000;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).to_path_buf()
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// The workload of the performance issue: six attributes, ~100k distinct keys, apply on.
fn requests() -> Vec<ResolveProcessRequest> {
    (0..DISTINCT_KEYS)
        .map(|i| {
            let mut ctx = Struct::default();
            let key = format!("user-{i}");
            ctx.fields.insert("targeting_key".into(), value(Kind::StringValue(key.clone())));
            ctx.fields.insert("visitor_id".into(), value(Kind::StringValue(key)));
            ctx.fields.insert("country".into(), value(Kind::StringValue(["SE", "US", "DE"][i % 3].into())));
            ctx.fields.insert("plan".into(), value(Kind::StringValue(["free", "pro"][i % 2].into())));
            ctx.fields.insert("age".into(), value(Kind::NumberValue((18 + i % 60) as f64)));
            ctx.fields.insert("beta".into(), value(Kind::BoolValue(i % 5 == 0)));
            let req = ResolveFlagsRequest {
                flags: vec![FLAG.into()],
                evaluation_context: Some(ctx),
                client_secret: SECRET.into(),
                apply: true,
                sdk: None,
            };
            ResolveProcessRequest::without_materializations(req)
        })
        .collect()
}

fn fixture_state() -> SetResolverStateRequest {
    SetResolverStateRequest {
        state: std::fs::read(fixtures().join("resolver_state_current.pb")).expect("fixture state"),
        account_id: std::fs::read_to_string(fixtures().join("account_id")).expect("account"),
        ..Default::default()
    }
}

fn read_module(path: &std::path::Path) -> GuestModule {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run `npm run build`)", path.display()));
    GuestModule::new(&bytes).expect("compile")
}

fn loaded(path: &std::path::Path) -> Guest {
    let mut g = read_module(path).instantiate(Limits::default(), Clock::System).expect("instantiate");
    g.call::<Void>(Export::SetResolverState, Some(&fixture_state())).expect("set state");
    g
}

/// What a contender resolves with.
enum Resolver {
    /// A bare guest instance, fed pre-framed request bytes.
    Guest { guest: Box<Guest>, framed: Vec<Vec<u8>> },
    /// An engine, fed request structs as the addon does.
    Engine { engine: Box<dyn Engine>, requests: Rc<Vec<ResolveProcessRequest>> },
}

/// One contender: a loaded resolver and where it is in its requests.
struct Contender {
    name: String,
    resolver: Resolver,
    next: usize,
    /// Per round: ns per resolve with the flushes, and without them.
    samples: Vec<(f64, f64)>,
}

impl Contender {
    fn guest(name: &str, path: &std::path::Path, reqs: &[ResolveProcessRequest]) -> Self {
        use prost::Message;
        let framed =
            reqs.iter().map(|r| confidence_proto::Request { data: r.encode_to_vec() }.encode_to_vec()).collect();
        let resolver = Resolver::Guest { guest: Box::new(loaded(path)), framed };
        Contender { name: name.into(), resolver, next: 0, samples: Vec::new() }
    }

    fn engine(name: &str, engine: Box<dyn Engine>, requests: Rc<Vec<ResolveProcessRequest>>) -> Self {
        engine.load_state(&fixture_state()).expect("set state");
        Contender { name: name.into(), resolver: Resolver::Engine { engine, requests }, next: 0, samples: Vec::new() }
    }

    /// ns per resolve over `n` resolves (full flush every FLUSH_EVERY, as a host would), with
    /// and without the flushes: a host flushes on another thread, so the second figure is
    /// what an evaluation waits for (the deferred resolve log moves work into the flushes
    /// whenever its worker falls behind).
    fn run(&mut self, n: usize) -> (f64, f64) {
        use prost::Message;
        let start = Instant::now();
        let mut flushing = std::time::Duration::ZERO;
        for _ in 0..n {
            let flush = (self.next + 1).is_multiple_of(FLUSH_EVERY);
            match &mut self.resolver {
                Resolver::Guest { guest, framed } => {
                    let req = &framed[self.next % framed.len()];
                    let data = guest.call_raw(Export::ResolveFlags, Some(req)).expect("resolve");
                    std::hint::black_box(ResolveProcessResponse::decode(data.as_slice()).expect("decode"));
                    if flush {
                        let t = Instant::now();
                        std::hint::black_box(
                            guest.call::<WriteFlagLogsRequest>(Export::BoundedFlushLogs, None).expect("flush"),
                        );
                        flushing += t.elapsed();
                    }
                }
                Resolver::Engine { engine, requests } => {
                    // Engines consume their request, as the addon hands them one per evaluation.
                    let req = requests[self.next % requests.len()].clone();
                    std::hint::black_box(engine.resolve(req).expect("resolve"));
                    if flush {
                        let t = Instant::now();
                        std::hint::black_box(engine.flush_logs());
                        flushing += t.elapsed();
                    }
                }
            }
            self.next += 1;
        }
        let total = start.elapsed();
        (total.as_nanos() as f64 / n as f64, (total - flushing).as_nanos() as f64 / n as f64)
    }

    fn median_of(&self, pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
        let mut s: Vec<f64> = self.samples.iter().map(pick).collect();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }

    fn median(&self) -> f64 {
        self.median_of(|s| s.0)
    }

    fn median_without_flushes(&self) -> f64 {
        self.median_of(|s| s.1)
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (9, 3_000) } else { (31, 10_000) };
    let reqs = Rc::new(requests());
    let ours_path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wasm/confidence_resolver.wasm"));
    let official_path = std::env::var_os("CONFIDENCE_OFFICIAL_WASM").map(std::path::PathBuf::from);

    let mut contenders = vec![Contender::guest("ours", ours_path, &reqs)];
    if let Some(p) = official_path.as_deref() {
        contenders.push(Contender::guest("official", p, &reqs));
    }
    let wasm_engine = WasmEngine::new(read_module(ours_path), WasmEngineConfig { pool_size: 1, ..Default::default() });
    contenders.push(Contender::engine("wasm_engine", Box::new(wasm_engine.expect("wasm engine")), reqs.clone()));
    for (name, defer_resolve_log) in [("native", false), ("native_deferred", true)] {
        let config = NativeEngineConfig { defer_resolve_log, ..Default::default() };
        let engine = NativeEngine::new(config).expect("native engine");
        contenders.push(Contender::engine(name, Box::new(engine), reqs.clone()));
    }
    for c in &mut contenders {
        c.run(per_round); // warm-up: JIT caches, allocator, schema sets
    }
    // Rounds alternate between contenders so the machine's drift hits all of them alike.
    for _ in 0..rounds {
        for c in &mut contenders {
            let sample = c.run(per_round);
            c.samples.push(sample);
        }
    }
    println!("single-flag resolve ({FLAG}, 6 attributes, {DISTINCT_KEYS} keys, apply on; median of {rounds} rounds)");
    println!("  {:<16} {:>9} {:>13} {:>18}", "", "ns/resolve", "resolves/s", "without flushes");
    for c in &contenders {
        println!(
            "  {:<16} {:>9.0} {:>13.0} {:>15.0} ns",
            c.name,
            c.median(),
            1e9 / c.median(),
            c.median_without_flushes()
        );
    }
    let median = |name: &str| contenders.iter().find(|c| c.name == name).map(Contender::median);
    match median("official") {
        None => {
            println!("  official         skipped: set CONFIDENCE_OFFICIAL_WASM (node scripts/fetch-official-wasm.mjs)")
        }
        Some(o) => println!(
            "  ratio            {:.2}x (official time / ours; > 1 means ours is faster)",
            o / contenders[0].median()
        ),
    }
    if let (Some(w), Some(n), Some(d)) = (median("wasm_engine"), median("native"), median("native_deferred")) {
        println!("  native           {:.2}x faster than wasm_engine; deferred {:.2}x", w / n, w / d);
    }
    let path = |name: &str| contenders.iter().find(|c| c.name == name).map(Contender::median_without_flushes);
    if let (Some(w), Some(n), Some(d)) = (path("wasm_engine"), path("native"), path("native_deferred")) {
        println!("  without flushes  native {:.2}x faster than wasm_engine; deferred {:.2}x", w / n, w / d);
    }
}
