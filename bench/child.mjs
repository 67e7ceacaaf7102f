// One measurement in a fresh process (started by run.mjs with --expose-gc), so memory and
// start-up figures belong to one contender alone: `node bench/child.mjs '<json task>'`.
// Prints one JSON line.
import { readFileSync } from 'node:fs';

import { OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { NativeResolver } from 'confidence-openfeature-provider/native';

import { ConstantProvider, OUR_WASM, silentLogger } from './lib/contenders.mjs';
import { control } from './lib/fake-cdn.mjs';
import { contextFactory, ENCRYPTION_KEY, FIXTURE_SECRET } from './lib/workload.mjs';
import { V8Provider } from './v8-host.mjs';

const task = JSON.parse(process.argv[2]);
const FLAG = 'fallthrough-test-2.enabled';
const ctx = contextFactory({ context: 'reference', keys: 100_000 });
const rawCtx = contextFactory({ context: 'reference', keys: 100_000 }, true);
const tick = () => new Promise((resolve) => setImmediate(resolve));

function settle() {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage().rss;
}

function guestBytes(metricsText) {
  const m = /^confidence_guest_memory_bytes (\d+)/m.exec(metricsText);
  return m ? Number(m[1]) : null;
}

/** The provider under test: online against the fake (uploads accepted and dropped), as users run it. */
function provider(who, extra = {}) {
  const online = { flagClientSecret: FIXTURE_SECRET, cdnBaseUrl: task.baseUrl, apiBaseUrl: task.baseUrl };
  switch (who) {
    case 'constant':
      return new ConstantProvider();
    case 'v8':
      return new V8Provider({ wasmPath: task.v8Wasm, ...online, ...extra });
    case 'ours':
      return new ConfidenceServerProviderLocal({ ...online, logger: silentLogger, ...extra });
    case 'ours-wasm':
      return new ConfidenceServerProviderLocal({ ...online, logger: silentLogger, engine: 'wasm', ...extra });
  }
  throw new Error(`unknown contender ${who}`);
}

function guestOf(who, p) {
  if (who === 'v8') return p.memoryBytes();
  if (who.startsWith('ours')) return guestBytes(p.metrics());
  return null;
}

/** `evals` evaluations through the OpenFeature client, then RSS and guest memory. */
async function memoryEvals() {
  // No state polls during the run: another process may be flipping the fake CDN's state.
  const p = provider(task.who, task.who.startsWith('ours') ? { stateUpdateInterval: 3_600_000 } : {});
  await OpenFeature.setProviderAndWait('m', p);
  const client = OpenFeature.getClient('m');
  const rssStart = settle();
  const started = performance.now();
  for (let i = 0; i < task.evals; i++) {
    await client.getBooleanValue(FLAG, false, ctx(i));
    if (i % 10_000 === 0) await tick(); // let timers (flushes, state polls) run
  }
  const seconds = (performance.now() - started) / 1000;
  return { rssStart, rssAfter: settle(), guestAfter: guestOf(task.who, p), evals: task.evals, seconds };
}

/** `swaps` state replacements, each followed by 100 evaluations, then RSS and guest memory. */
async function memorySwaps() {
  const bodies = task.files.map((f) => readFileSync(f));
  if (task.who === 'v8') {
    const p = new V8Provider({ wasmPath: task.v8Wasm, flagClientSecret: FIXTURE_SECRET, initialState: bodies[0] });
    await p.initialize();
    const rssStart = settle();
    for (let s = 0; s < task.swaps; s++) {
      p.applyStateBody(bodies[(s + 1) % 2]);
      for (let k = 0; k < 100; k++) p.evaluate(FLAG, false, ctx(s * 100 + k));
    }
    return { rssStart, rssAfter: settle(), guestAfter: p.memoryBytes(), swaps: task.swaps };
  }
  // Ours: real swaps through the CDN path (fetch, decode, load into every instance), polled
  // every 10 ms; the native class because the provider's minimum poll interval is 1 s.
  const r = new NativeResolver({
    flagClientSecret: FIXTURE_SECRET,
    cdnBaseUrl: task.baseUrl,
    apiBaseUrl: task.baseUrl,
    stateUpdateIntervalMs: 10,
    ...(task.who === 'ours-wasm' ? { wasmPath: OUR_WASM } : {}),
  });
  await r.initialize(10_000);
  const rssStart = settle();
  const started = performance.now();
  for (let s = 0; s < task.swaps; s++) {
    const before = r.status().updates;
    await control(task.baseUrl, {
      cmd: 'set_state',
      secret: FIXTURE_SECRET,
      file: task.files[(s + 1) % 2],
      etag: `"m-${s}"`,
    });
    const deadline = performance.now() + 5000;
    while (r.status().updates === before) {
      if (performance.now() > deadline) throw new Error(`swap ${s} not applied within 5 s`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    for (let k = 0; k < 100; k++) r.resolve(['flags/fallthrough-test-2'], JSON.stringify(rawCtx(s * 100 + k)), true);
  }
  const seconds = (performance.now() - started) / 1000;
  const out = { rssStart, rssAfter: settle(), guestAfter: guestBytes(r.metrics()), swaps: task.swaps, seconds };
  await r.close(1000);
  return out;
}

/** Constructor to READY through `OpenFeature.setProviderAndWait`, encrypted state from the fake CDN. */
async function startup() {
  const started = performance.now();
  const p = provider(task.who, task.who === 'constant' ? {} : { encryptionKey: ENCRYPTION_KEY });
  await OpenFeature.setProviderAndWait('s', p);
  const ms = performance.now() - started;
  const ok =
    task.who === 'constant' || (await OpenFeature.getClient('s').getBooleanValue(FLAG, false, ctx(1))) !== undefined;
  return { ms, ok };
}

const modes = { 'memory-evals': memoryEvals, 'memory-swaps': memorySwaps, startup };
const result = await modes[task.mode]();
console.log(JSON.stringify(result));
await Promise.race([OpenFeature.close(), new Promise((resolve) => setTimeout(resolve, 3000))]);
process.exit(0);
