// Timing: contenders of one workload run in alternating rounds so the machine's drift (shared,
// noisy) hits them alike. Throughput rounds have no per-op clock; latency rounds time each op.
// crates/confidence-host/benches/crate_floor.rs uses the same scheme.

const yieldToLoop = () => new Promise((resolve) => setImmediate(resolve));

export function percentile(sorted, q) {
  if (sorted.length === 0) return 0;
  return sorted[Math.round((sorted.length - 1) * q)];
}

export function latencyStats(samples) {
  const sorted = Float64Array.from(samples).sort();
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: sorted.length ? sorted[sorted.length - 1] : 0,
    samples: sorted.length,
  };
}

/** Runs `n` ops from `state.i`; returns elapsed ms. Sync and async ops get separate loops. */
async function runOps(c, n, samples) {
  const { op } = c;
  let i = c.i;
  let sink;
  const start = performance.now();
  if (c.async) {
    if (samples) {
      for (let k = 0; k < n; k++, i++) {
        const s = performance.now();
        sink = await op(i);
        samples.push((performance.now() - s) * 1000);
      }
    } else {
      for (let k = 0; k < n; k++, i++) sink = await op(i);
    }
  } else if (samples) {
    for (let k = 0; k < n; k++, i++) {
      const s = performance.now();
      sink = op(i);
      samples.push((performance.now() - s) * 1000);
    }
  } else {
    for (let k = 0; k < n; k++, i++) sink = op(i);
  }
  const elapsed = performance.now() - start;
  c.i = i;
  c.sink = sink;
  return elapsed;
}

/**
 * Measures contenders `{ name, op(i), async }` of one workload. Returns per contender
 * `{ ops (median ops/s of the throughput rounds), p50/p99/p999/max (µs), rounds }`.
 */
export async function measure(contenders, { rounds, roundMs, warmMs }) {
  const live = contenders.map((c) => ({ ...c, i: 0, rates: [], samples: [], n: 0 }));
  for (const c of live) {
    let n = 16;
    let done = 0;
    const start = performance.now();
    while (performance.now() - start < warmMs) {
      await runOps(c, n, null);
      done += n;
      n = Math.min(n * 2, 4096);
    }
    c.n = Math.max(20, Math.round((done / (performance.now() - start)) * roundMs));
    await yieldToLoop();
  }
  for (let r = 0; r < rounds; r++) {
    // Rotate the order so no contender always follows the same neighbour.
    for (let k = 0; k < live.length; k++) {
      const c = live[(k + r) % live.length];
      c.rates.push((c.n / (await runOps(c, c.n, null))) * 1000);
      await yieldToLoop();
      await runOps(c, c.n, c.samples);
      await yieldToLoop();
    }
  }
  const out = {};
  for (const c of live) {
    const rates = c.rates.sort((a, b) => a - b);
    out[c.name] = { ops: rates[Math.floor(rates.length / 2)], ...latencyStats(c.samples), rounds };
  }
  return out;
}
