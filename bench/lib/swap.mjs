// The state-swap workload: a tight evaluation loop, first steady, then while the state is
// replaced every `periodMs`. Latency per evaluation; what matters is p99 (and the tail) of the
// swapping phase against the steady one.
//
// - V8-wasm host: the swap runs on the evaluating thread, as in the official provider (its
//   poller applies a fetched state in an event-loop callback); the evaluation that meets it
//   waits, so its time is charged to that evaluation. The fetch itself is left out.
// - Ours (native class): real swaps through the loopback CDN, polled every 50 ms on the addon's
//   background thread while a worker flips the served state every `periodMs`. (The provider's
//   own minimum poll interval is 1 s, hence the native class.)
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

import { NativeResolver } from 'confidence-openfeature-provider/native';

import { V8Provider } from '../v8-host.mjs';
import { OUR_WASM } from './contenders.mjs';
import { latencyStats } from './harness.mjs';
import { contextFactory, FIXTURE_SECRET } from './workload.mjs';

const FLAG_KEY = 'fallthrough-test-2.enabled';
const FLAGS = ['flags/fallthrough-test-2'];
const CHUNK = 256;
const tick = () => new Promise((resolve) => setImmediate(resolve));

async function phase(op, ms, beforeOp) {
  const samples = [];
  let i = 0;
  const start = performance.now();
  const end = start + ms;
  while (performance.now() < end) {
    for (let k = 0; k < CHUNK; k++, i++) {
      const s = performance.now();
      beforeOp?.(s);
      op(i);
      samples.push((performance.now() - s) * 1000);
    }
    await tick(); // timers and I/O get their turn, as between requests in a server
  }
  return { ...latencyStats(samples), ops: (i / (performance.now() - start)) * 1000 };
}

export async function swapWorkload({ fake, files, phaseMs, periodMs, v8Wasm }) {
  const bodies = [readFileSync(files.fixture), readFileSync(files.fixtureB)];
  const ofCtx = contextFactory({ context: 'reference', keys: 100_000 });
  const rawCtx = contextFactory({ context: 'reference', keys: 100_000 }, true);
  await fake.setState(FIXTURE_SECRET, files.fixture, '"steady"');

  const v8 = new V8Provider({ wasmPath: v8Wasm, flagClientSecret: FIXTURE_SECRET, initialState: bodies[0] });
  await v8.initialize();
  let flips = 0;
  let next = 0;
  const contenders = [
    {
      name: 'V8-wasm · direct',
      op: (i) => v8.evaluate(FLAG_KEY, false, ofCtx(i)),
      beforeOp: (now) => {
        if (now < next) return;
        v8.applyStateBody(bodies[++flips % 2]);
        next = now + periodMs;
      },
      start: () => {
        next = performance.now() + periodMs;
        flips = 0;
      },
      swaps: () => flips,
    },
  ];
  const natives = [
    ['ours · native class', {}],
    ['ours wasm-engine · native class', { wasmPath: OUR_WASM }],
  ];
  const resolvers = [];
  for (const [name, extra] of natives) {
    const r = new NativeResolver({
      flagClientSecret: FIXTURE_SECRET,
      cdnBaseUrl: fake.baseUrl,
      apiBaseUrl: fake.baseUrl,
      stateUpdateIntervalMs: 50,
      ...extra,
    });
    await r.initialize(10_000);
    resolvers.push(r);
    let worker = null;
    let before = 0;
    contenders.push({
      name,
      op: (i) => r.resolve(FLAGS, JSON.stringify(rawCtx(i)), true),
      start: () => {
        before = r.status().updates;
        worker = new Worker(new URL('./swap-driver.mjs', import.meta.url), {
          workerData: {
            baseUrl: fake.baseUrl,
            secret: FIXTURE_SECRET,
            files: [files.fixture, files.fixtureB],
            periodMs,
          },
        });
      },
      stop: async () => {
        const done = new Promise((resolve) => worker.once('message', resolve));
        worker.postMessage('stop');
        await done;
        await worker.terminate();
        // Back to a steady state for whoever comes next.
        await fake.setState(FIXTURE_SECRET, files.fixture, '"steady"');
        await new Promise((resolve) => setTimeout(resolve, 200));
      },
      swaps: () => r.status().updates - before,
    });
  }

  const out = {};
  for (const c of contenders) {
    await phase(c.op, 300); // warm-up
    out[c.name] = { steady: await phase(c.op, phaseMs) };
  }
  for (const c of contenders) {
    c.start();
    const swap = await phase(c.op, phaseMs, c.beforeOp);
    const swaps = c.swaps();
    await c.stop?.();
    out[c.name].swap = { ...swap, swaps };
  }
  await v8.onClose();
  for (const r of resolvers) await r.close(1000);
  return out;
}
