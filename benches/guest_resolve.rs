//! ns per single-flag resolve through our guest and, when `CONFIDENCE_OFFICIAL_WASM` names it,
//! through Confidence's released binary, both under the same wasmtime host in the same run.
//! A benchmark, not a test: it prints figures and ratios and asserts nothing.
//!
//!     cargo bench --bench guest_resolve [-- --quick]

use std::time::Instant;

use confidence_openfeature_provider::guest::{Clock, Export, Guest, GuestModule, Limits};
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
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn value(kind: Kind) -> Value {
    Value { kind: Some(kind) }
}

/// The workload of the performance issue: six attributes, ~100k distinct keys, apply on.
fn requests() -> Vec<Vec<u8>> {
    use prost::Message;
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
            ResolveProcessRequest::without_materializations(req).encode_to_vec()
        })
        .collect()
}

fn loaded(path: &std::path::Path) -> Guest {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (run `npm run build`)", path.display()));
    let module = GuestModule::new(&bytes).expect("compile");
    let mut g = module.instantiate(Limits::default(), Clock::System).expect("instantiate");
    let set = SetResolverStateRequest {
        state: std::fs::read(fixtures().join("resolver_state_current.pb")).expect("fixture state"),
        account_id: std::fs::read_to_string(fixtures().join("account_id")).expect("account"),
        ..Default::default()
    };
    g.call::<Void>(Export::SetResolverState, Some(&set)).expect("set state");
    g
}

/// One contender: a loaded guest, its framed requests and where it is in them.
struct Contender {
    name: String,
    guest: Guest,
    framed: Vec<Vec<u8>>,
    next: usize,
    samples: Vec<f64>,
}

impl Contender {
    fn new(name: &str, path: &std::path::Path, reqs: &[Vec<u8>]) -> Self {
        use prost::Message;
        let framed = reqs.iter().map(|r| confidence_proto::Request { data: r.clone() }.encode_to_vec()).collect();
        Contender { name: name.into(), guest: loaded(path), framed, next: 0, samples: Vec::new() }
    }

    /// ns per resolve over `n` resolves (full flush every FLUSH_EVERY, as a host would).
    fn run(&mut self, n: usize) -> f64 {
        use prost::Message;
        let start = Instant::now();
        for _ in 0..n {
            let req = &self.framed[self.next % self.framed.len()];
            let data = self.guest.call_raw(Export::ResolveFlags, Some(req)).expect("resolve");
            std::hint::black_box(ResolveProcessResponse::decode(data.as_slice()).expect("decode"));
            self.next += 1;
            if self.next.is_multiple_of(FLUSH_EVERY) {
                std::hint::black_box(
                    self.guest.call::<WriteFlagLogsRequest>(Export::BoundedFlushLogs, None).expect("flush"),
                );
            }
        }
        start.elapsed().as_nanos() as f64 / n as f64
    }

    fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (9, 3_000) } else { (31, 10_000) };
    let reqs = requests();
    let ours_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm/confidence_resolver.wasm");
    let official_path = std::env::var_os("CONFIDENCE_OFFICIAL_WASM").map(std::path::PathBuf::from);

    let mut contenders = vec![Contender::new("ours", &ours_path, &reqs)];
    if let Some(p) = official_path.as_deref() {
        contenders.push(Contender::new("official", p, &reqs));
    }
    for c in &mut contenders {
        c.run(per_round); // warm-up: JIT caches, allocator, schema sets
    }
    // Rounds alternate between contenders so the machine's drift hits all of them alike.
    for _ in 0..rounds {
        for c in &mut contenders {
            let ns = c.run(per_round);
            c.samples.push(ns);
        }
    }
    println!("single-flag resolve ({FLAG}, 6 attributes, {DISTINCT_KEYS} keys, apply on, wasmtime; median of {rounds} rounds)");
    for c in &contenders {
        println!("  {:<9} {:>9.0} ns/resolve  {:>8.0} resolves/s", c.name, c.median(), 1e9 / c.median());
    }
    match contenders.get(1) {
        None => println!("  official  skipped: set CONFIDENCE_OFFICIAL_WASM (node scripts/fetch-official-wasm.mjs)"),
        Some(o) => println!(
            "  ratio     {:.2}x (official time / ours; > 1 means ours is faster)",
            o.median() / contenders[0].median()
        ),
    }
}
