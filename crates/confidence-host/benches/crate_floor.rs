//! Baseline 3 of `npm run bench`: the `confidence_resolver` crate called natively, with
//! Confidence's own loggers (`ResolveLogger`, `AssignLogger`, `Telemetry`) behind a minimal
//! `Host`: the floor a naive native binding would reach (no JS, no wasm, no marshalling).
//!
//! Driven by `bench/run.mjs`, which writes the workloads (same states, flags, contexts and key
//! distribution as the JS contenders) to a JSON spec and reads one JSON object back:
//!
//!     crate_floor <spec.json>                       workloads, state-swap latency, memory
//!     crate_floor --startup <cdn-url> <secret> <key-hex>   fetch + decrypt + build, once
//!
//! A benchmark, not a test: it measures and reports, it asserts nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use confidence_resolver::assign_logger::AssignLogger;
use confidence_resolver::proto::confidence::flags::admin::v1::ResolverState as ResolverStatePb;
use confidence_resolver::proto::confidence::flags::resolver::v1::{
    telemetry_data, ResolveFlagsRequest, ResolveProcessRequest, ResolveReason, Sdk, TelemetryData,
};
use confidence_resolver::proto::google::{value::Kind, Struct, Timestamp, Value};
use confidence_resolver::resolve_logger::ResolveLogger;
use confidence_resolver::telemetry::Telemetry;
use confidence_resolver::{Client, FlagToApply, Host, ResolvedValue, ResolverState};
use prost::Message;
use serde_json::{json, Value as Json};

/// Assign entries per flush, as the guest bounds them (docs/log-upload.md, "Batching and size bounds").
const LOG_TARGET_BYTES: usize = 4 * 1024 * 1024;
/// A full log flush every this many evaluations: the amortised cost of a periodic flush.
const FLUSH_EVERY: u64 = 1_000;
/// Tokens stay in process; the crate's no_std build passes them through with an all-zero key.
static TOKEN_KEY: LazyLock<Bytes> = LazyLock::new(|| Bytes::from_static(&[0; 16]));

static RESOLVE_LOGGER: LazyLock<ResolveLogger<FloorHost>> = LazyLock::new(ResolveLogger::new);
static ASSIGN_LOGGER: LazyLock<AssignLogger> = LazyLock::new(AssignLogger::new);
static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(Telemetry::new);

struct FloorHost;

impl Host for FloorHost {
    fn current_time() -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp { seconds: since.as_secs() as i64, nanos: since.subsec_nanos() as i32 }
    }

    fn log_resolve(resolve_id: &str, evaluation_context: &Struct, values: &[ResolvedValue<'_>], client: &Client) {
        RESOLVE_LOGGER.log_resolve(resolve_id, evaluation_context, &client.client_credential_name, values, client);
    }

    fn log_assign(resolve_id: &str, assigned_flags: &[FlagToApply<'_>], client: &Client, sdk: &Option<Sdk>) {
        ASSIGN_LOGGER.log_assigns(resolve_id, assigned_flags, client, sdk);
    }
}

/// What a host would upload: resolve logs, telemetry counters, assign entries, serialized.
/// (Telemetry is the cumulative snapshot: the crate's delta API needs a type from a crate this
/// package does not depend on; the cost difference is a few counters.)
fn flush() -> usize {
    let mut logs = RESOLVE_LOGGER.checkpoint();
    let snapshot = TELEMETRY.snapshot();
    logs.telemetry_data = Some(TelemetryData {
        resolve_rate: snapshot
            .resolve_rates
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(reason, c)| telemetry_data::ResolveRate { count: *c as u32, reason: reason as i32 })
            .collect(),
        ..Default::default()
    });
    ASSIGN_LOGGER.checkpoint_fill_with_limit(&mut logs, LOG_TARGET_BYTES, false);
    logs.encode_to_vec().len()
}

/// `ClientResolverState{state = 1, account = 2}`, the CDN body.
#[derive(Clone, PartialEq, Message)]
struct ClientResolverState {
    #[prost(bytes = "vec", tag = "1")]
    state: Vec<u8>,
    #[prost(string, tag = "2")]
    account: String,
}

fn load_state(body: &[u8]) -> ResolverState {
    let wrapper = ClientResolverState::decode(body).expect("CDN body");
    let pb = ResolverStatePb::decode(wrapper.state.as_slice()).expect("resolver state");
    ResolverState::from_proto(pb, &wrapper.account, None).expect("state build")
}

// ---- workloads: contexts generated exactly as bench/lib/workload.mjs does ---------------------

#[derive(Clone)]
struct Workload {
    id: String,
    bulk: bool,
    secret: String,
    flag: String,
    path: Vec<String>,
    context: String,
    attrs: u64,
    keys: u64,
    apply: bool,
}

impl Workload {
    fn from_json(w: &Json) -> Self {
        let s = |k: &str| w[k].as_str().unwrap_or_default().to_string();
        Workload {
            id: s("id"),
            bulk: w["bulk"].as_bool().unwrap_or(false),
            secret: s("secret"),
            flag: s("flag"),
            path: w["path"]
                .as_array()
                .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
            context: s("context"),
            attrs: w["attrs"].as_u64().unwrap_or(6),
            keys: w["keys"].as_u64().unwrap_or(1),
            apply: w["apply"].as_bool().unwrap_or(true),
        }
    }
}

fn string(s: String) -> Value {
    Value { kind: Some(Kind::StringValue(s)) }
}

fn number(n: f64) -> Value {
    Value { kind: Some(Kind::NumberValue(n)) }
}

fn boolean(b: bool) -> Value {
    Value { kind: Some(Kind::BoolValue(b)) }
}

/// The i-th key of a walk that visits `keys` distinct keys before repeating.
fn key_index(i: u64, keys: u64) -> u64 {
    (i * 7919) % keys
}

fn context(w: &Workload, i: u64) -> Struct {
    let k = key_index(i, w.keys);
    let key = format!("user-{k}");
    let mut fields = BTreeMap::new();
    if w.context == "reference" {
        fields.insert("visitor_id".to_string(), string(key.clone()));
        fields.insert("country".to_string(), string(["SE", "US", "DE"][(k % 3) as usize].to_string()));
        fields.insert("plan".to_string(), string(["free", "pro"][(k % 2) as usize].to_string()));
        fields.insert("age".to_string(), number((18 + k % 60) as f64));
        fields.insert("beta".to_string(), boolean(k.is_multiple_of(5)));
    } else {
        fields.insert("country".to_string(), string(["SE", "US", "DE", "NO"][(k % 4) as usize].to_string()));
        for j in 0..w.attrs.saturating_sub(2) {
            let v = match j % 3 {
                0 => string(format!("s{}", (k + j) % 11)),
                1 => number(((k + j) % 97) as f64),
                _ => boolean((k + j).is_multiple_of(2)),
            };
            fields.insert(format!("attr_{j}"), v);
        }
    }
    fields.insert("targeting_key".to_string(), string(key));
    Struct { fields: fields.into_iter().collect() }
}

/// One evaluation as a host would do it: resolve, read the value at the path, telemetry.
/// Returns whether the value at the path is `true` (the cross-check with the JS contenders).
fn evaluate(state: &ResolverState, w: &Workload, i: u64) -> bool {
    let started = Instant::now();
    let ctx = context(w, i);
    let request = ResolveFlagsRequest {
        flags: if w.bulk { vec![] } else { vec![w.flag.clone()] },
        evaluation_context: Some(ctx.clone()),
        client_secret: w.secret.clone(),
        apply: w.apply,
        sdk: None,
    };
    let resolver = state.get_resolver::<FloorHost>(&w.secret, ctx, &TOKEN_KEY).expect("resolver");
    let response = resolver.resolve_flags(ResolveProcessRequest::without_materializations(request)).expect("resolve");
    let (response, _) = response.into_resolved().expect("resolved");
    let mut hit = false;
    let mut reason = ResolveReason::Unspecified;
    if let Some(flag) = response.resolved_flags.first() {
        reason = ResolveReason::try_from(flag.reason).unwrap_or(ResolveReason::Unspecified);
        let mut value: Option<&Kind> = None;
        let mut fields = flag.value.as_ref().map(|s| &s.fields);
        for p in &w.path {
            value = fields.and_then(|f| f.get(p)).and_then(|v| v.kind.as_ref());
            fields = match value {
                Some(Kind::StructValue(s)) => Some(&s.fields),
                _ => None,
            };
        }
        hit = matches!(value, Some(Kind::BoolValue(true)));
    }
    std::hint::black_box(&response);
    TELEMETRY.record_latency_us(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    TELEMETRY.mark_resolve(if w.bulk { ResolveReason::Unspecified } else { reason });
    if i.is_multiple_of(FLUSH_EVERY) {
        std::hint::black_box(flush());
    }
    hit
}

// ---- measurement: the same scheme as bench/lib/harness.mjs ---------------------------------

struct Timing {
    rounds: usize,
    round: Duration,
    warm: Duration,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn latency_stats(mut samples: Vec<f64>) -> Json {
    samples.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&samples, 0.5),
        "p99": percentile(&samples, 0.99),
        "p999": percentile(&samples, 0.999),
        "max": samples.last().copied().unwrap_or(0.0),
        "samples": samples.len(),
    })
}

/// Throughput rounds (no per-op clock) alternate with latency rounds (a clock around each op);
/// ops/s is the median of the throughput rounds, latencies (µs) pool the latency rounds.
fn measure(t: &Timing, mut op: impl FnMut(u64)) -> Json {
    let mut i = 0u64;
    let warm_start = Instant::now();
    while warm_start.elapsed() < t.warm {
        for _ in 0..16 {
            op(i);
            i += 1;
        }
    }
    let rate = i as f64 / warm_start.elapsed().as_secs_f64();
    let n = ((rate * t.round.as_secs_f64()) as u64).max(20);
    let mut rates = Vec::new();
    let mut samples = Vec::with_capacity(n as usize * t.rounds);
    for _ in 0..t.rounds {
        let start = Instant::now();
        for _ in 0..n {
            op(i);
            i += 1;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
        for _ in 0..n {
            let s = Instant::now();
            op(i);
            samples.push(s.elapsed().as_nanos() as f64 / 1000.0);
            i += 1;
        }
    }
    rates.sort_by(f64::total_cmp);
    let mut out = latency_stats(samples);
    out["ops"] = json!(rates[rates.len() / 2]);
    out["rounds"] = json!(t.rounds);
    out
}

/// Latencies (µs) of a tight loop for `duration`; with `swap`, a thread swaps the state every
/// `period` meanwhile (flush first, as hosts do before replacing a state).
fn swap_phase(
    shared: &Arc<RwLock<Arc<ResolverState>>>,
    w: &Workload,
    duration: Duration,
    swap: Option<(Vec<Vec<u8>>, Duration)>,
) -> Json {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = swap.map(|(bodies, period)| {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0usize;
            let mut next = Instant::now() + period;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(5)));
                    continue;
                }
                next += period;
                flush();
                let state = Arc::new(load_state(&bodies[swaps % bodies.len()]));
                *shared.write().unwrap() = state;
                swaps += 1;
            }
            swaps
        })
    });
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < duration {
        let s = Instant::now();
        let state = shared.read().unwrap().clone();
        std::hint::black_box(evaluate(&state, w, i));
        samples.push(s.elapsed().as_nanos() as f64 / 1000.0);
        i += 1;
    }
    let ops = i as f64 / start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.map(|h| h.join().unwrap()).unwrap_or(0);
    let mut out = latency_stats(samples);
    out["ops"] = json!(ops);
    out["swaps"] = json!(swaps);
    out
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn ms(v: &Json, key: &str, default: u64) -> Duration {
    Duration::from_millis(v[key].as_u64().unwrap_or(default))
}

fn run_spec(path: &str) -> Json {
    let spec: Json = serde_json::from_slice(&std::fs::read(path).expect("spec")).expect("spec JSON");
    let timing = Timing {
        rounds: spec["rounds"].as_u64().unwrap_or(5) as usize,
        round: ms(&spec, "roundMs", 100),
        warm: ms(&spec, "warmMs", 200),
    };
    let mut states: BTreeMap<String, Arc<ResolverState>> = BTreeMap::new();
    let mut state_for = |file: &str| {
        states
            .entry(file.to_string())
            .or_insert_with(|| Arc::new(load_state(&std::fs::read(file).expect("state"))))
            .clone()
    };

    let mut workloads = serde_json::Map::new();
    for wj in spec["workloads"].as_array().cloned().unwrap_or_default() {
        let w = Workload::from_json(&wj);
        let state = state_for(wj["state"].as_str().unwrap());
        let check = (0..200).filter(|&i| evaluate(&state, &w, i)).count();
        let mut result = measure(&timing, |i| {
            std::hint::black_box(evaluate(&state, &w, i));
        });
        result["check"] = json!(check);
        workloads.insert(w.id.clone(), result);
    }

    let mut out = json!({ "workloads": workloads });
    if let Some(s) = spec.get("swap").filter(|s| !s.is_null()) {
        let w = Workload::from_json(&s["workload"]);
        let bodies: Vec<Vec<u8>> =
            s["states"].as_array().unwrap().iter().map(|p| std::fs::read(p.as_str().unwrap()).unwrap()).collect();
        let shared = Arc::new(RwLock::new(Arc::new(load_state(&bodies[0]))));
        let phase = ms(s, "phaseMs", 3000);
        let period = ms(s, "periodMs", 100);
        swap_phase(&shared, &w, Duration::from_millis(300), None); // warm-up
        let steady = swap_phase(&shared, &w, phase, None);
        let swapping = swap_phase(&shared, &w, phase, Some((bodies, period)));
        out["swap"] = json!({ "steady": steady, "swap": swapping });
    }
    if let Some(m) = spec.get("memory").filter(|m| !m.is_null()) {
        let w = Workload::from_json(&m["workload"]);
        let bodies: Vec<Vec<u8>> =
            m["states"].as_array().unwrap().iter().map(|p| std::fs::read(p.as_str().unwrap()).unwrap()).collect();
        let before = rss_bytes();
        let mut state = Arc::new(load_state(&bodies[0]));
        let loaded = rss_bytes();
        let evals = m["evals"].as_u64().unwrap_or(1_000_000);
        let started = Instant::now();
        for i in 0..evals {
            std::hint::black_box(evaluate(&state, &w, i));
        }
        flush();
        let after_evals = rss_bytes();
        let eval_secs = started.elapsed().as_secs_f64();
        let swaps = m["swaps"].as_u64().unwrap_or(1000);
        let between = m["evalsBetweenSwaps"].as_u64().unwrap_or(100);
        let mut i = evals;
        for s in 0..swaps {
            flush();
            state = Arc::new(load_state(&bodies[(s as usize + 1) % bodies.len()]));
            for _ in 0..between {
                std::hint::black_box(evaluate(&state, &w, i));
                i += 1;
            }
        }
        flush();
        out["memory"] = json!({
            "rssStart": before, "rssLoaded": loaded, "rssAfterEvals": after_evals,
            "rssAfterSwaps": rss_bytes(), "evals": evals, "swaps": swaps, "evalSeconds": eval_secs,
        });
    }
    out
}

// ---- start-up: loopback CDN → ready ----------------------------------------------------------

/// One plain HTTP/1.1 GET over loopback (the fake CDN closes every connection after a response).
fn http_get(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("headers") + 4;
    assert!(response.starts_with(b"HTTP/1.1 200"), "CDN answered {}", String::from_utf8_lossy(&response[..20]));
    response.split_off(split)
}

fn startup(cdn: &str, secret: &str, key_hex: &str) -> Json {
    use aes_gcm::aead::Aead;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
    use sha2::{Digest, Sha256};
    let started = Instant::now();
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    let body = http_get(&format!("{}/{digest}.enc", cdn.trim_end_matches('/')));
    let key = hex::decode(key_hex).expect("key hex");
    let cipher = Aes256Gcm::new_from_slice(&key).expect("key length");
    let plain = cipher.decrypt(Nonce::from_slice(&body[..12]), &body[12..]).expect("decrypt");
    let state = load_state(&plain);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    std::hint::black_box(state);
    json!({ "ms": ms })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let out = match args.first().map(String::as_str) {
        Some("--startup") if args.len() == 4 => startup(&args[1], &args[2], &args[3]),
        Some(spec) if !spec.starts_with("--") => run_spec(spec),
        _ => {
            eprintln!(
                "usage: crate_floor <spec.json> | --startup <cdn-url> <secret> <key-hex> (driven by `npm run bench`)"
            );
            std::process::exit(2);
        }
    };
    println!("{out}");
}
