#!/usr/bin/env node
// `npm run soak [-- --duration <s>] [--engine native|wasm] [--rate max] [--json]` (default 180 s):
// evaluations
// at full speed from several async callers while the loopback fake Confidence serves a new state
// every 200 ms and fails its CDN and log routes on a schedule; then close(). Exits non-zero when
// an evaluation fails with an unexpected code, a log batch is unaccounted for, or RSS grows past
// its bound after warm-up. It never calls process.exit: `__test__/soak.test.mjs` runs it as a
// child and fails if it does not end by itself.
//
// The provider's shortest poll is 1 s (`stateUpdateInterval` minimum), so it applies whichever
// 200 ms state is current at each poll: the report counts states served and states applied.
//
// `--rate max` is the exposure workload instead: the direct API as fast as this machine goes,
// apply on, one exposure per evaluation (distinct keys), the default `flushInterval`, against a
// healthy loopback endpoint. It fails when a log batch is dropped, rejected or left pending, or
// RSS passes its bound.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import { ErrorCode, OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { buildTestState } from 'confidence-openfeature-provider/testing';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '180' },
    engine: { type: 'string', default: 'native' },
    json: { type: 'boolean', default: false },
    rate: { type: 'string', default: 'mixed' },
  },
});
if (!['mixed', 'max'].includes(args.rate)) throw new Error(`--rate must be mixed or max, got ${args.rate}`);
const durationMs = Math.max(5, Number(args.duration)) * 1000;
const MiB = 2 ** 20;
/**
 * RSS may grow this much from the end of warm-up to the end (both after a full GC, the end
 * after close). Measured on a 2-core machine, native engine: -7 to +26 MiB over the last 10 s
 * of a 20 s run, +2 to +25 MiB over the last 120 s of a 180 s run (samples in between swing
 * by ±30 MiB: garbage between collections). Each second of evaluations produces ~2.5 MB of
 * logs, so keeping them, or a state per swap, would pass it within a minute.
 */
const RSS_BOUND = 48 * MiB;
/** The same for the resolver guests' linear memory (wasm engine; 0 on the native engine). */
const GUEST_BOUND = 32 * MiB;
const CALLERS = 4;
const SWAP_EVERY_MS = 200;
const FAULT_EVERY_MS = 1500;
/** Cycled over both routes in turn; each fails the route's next two requests. */
const FAULTS = {
  http503: { type: 'status', code: 503 },
  reset: { type: 'reset' },
  slow: { type: 'slow', ms: 1500 }, // beyond requestTimeout: the client gives up first
  garbage: { type: 'garbage' },
  truncate: { type: 'truncate' },
  http500: { type: 'status', code: 500 },
};
/** `comet` exists in every other state only, so FLAG_NOT_FOUND is an expected answer. */
const EXPECTED_CODES = new Set([ErrorCode.FLAG_NOT_FOUND]);

// A real collection before each RSS reading, without a flag on the command line.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc');

if (!process.env.FAKE_CONFIDENCE_BIN) {
  const triple = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1];
  process.env.FAKE_CONFIDENCE_BIN = join(root, 'target', triple, 'release', 'fake-confidence');
  if (!existsSync(process.env.FAKE_CONFIDENCE_BIN)) {
    const built = spawnSync('cargo', ['build', '--release', '-p', 'fake-confidence'], { cwd: root, stdio: 'inherit' });
    if (built.status !== 0) throw new Error('cannot build fake-confidence');
  }
}
const { startFakeConfidence } = await import('../__test__/support/fake-confidence.mjs');

const secret = 'soak-secret';
/** States that differ in values, rollout and which flags exist, so every swap changes flags. */
const states = Array.from({ length: 6 }, (_, v) =>
  buildTestState({
    clientSecret: secret,
    flags: {
      banner: {
        variants: { on: { enabled: true, text: `v${v}` }, off: { enabled: false, text: 'off' } },
        rules: [{ split: { on: 1 + v, off: 6 - v } }],
      },
      limits: {
        variants: { small: { max: 10 + v }, large: { max: 100 + v } },
        rules: [{ when: { attribute: 'tier', equals: 'gold' }, variant: 'large' }, { variant: 'small' }],
      },
      ...(v % 2 === 0 ? { comet: { variants: { yes: { go: true } }, rules: [{ variant: 'yes' }] } } : {}),
    },
  }),
);

const metric = (text, name) => Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1] ?? Number.NaN);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const rssMiB = () => Math.round((process.memoryUsage().rss / MiB) * 10) / 10;

if (args.rate === 'max') {
  await maxRate();
} else {
  await mixed();
}

/**
 * The exposure workload. RSS may grow by at most this much from warm-up to the end (both after
 * a full GC): the upload backlog's 32 MiB bound plus one full batch in flight and one waiting.
 */
/** The loopback fake serving the first state, and a provider for it (`extra` options on top). */
async function soakProvider(extra) {
  const fake = await startFakeConfidence();
  await fake.setStateBytes(secret, states[0], '"s0"');
  const provider = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    engine: args.engine,
    cdnBaseUrl: fake.baseUrl,
    apiBaseUrl: fake.baseUrl,
    logger: { error() {}, warn() {}, info() {}, debug() {} },
    ...extra,
  });
  return { fake, provider };
}

async function maxRate() {
  const MAX_RATE_RSS_BOUND = 48 * MiB;
  const { fake, provider } = await soakProvider({});
  await provider.initialize();
  const start = rssMiB();
  let evaluations = 0;
  let running = true;
  const loop = async () => {
    while (running) {
      for (let j = 0; j < 2000; j++, evaluations++) {
        provider.evaluateBoolean('banner.enabled', false, { targetingKey: `u${evaluations}` });
      }
      await new Promise((r) => setImmediate(r));
    }
  };
  const began = Date.now();
  const evaluating = loop();
  const warmUpMs = Math.min(20_000, durationMs / 3);
  await sleep(warmUpMs);
  gc();
  const afterWarmUp = rssMiB();
  const samples = [];
  for (let left = durationMs - warmUpMs; left > 0; left -= 10_000) {
    await sleep(Math.min(left, 10_000));
    samples.push(rssMiB());
  }
  running = false;
  await evaluating;
  const seconds = (Date.now() - began) / 1000;
  const closing = Date.now();
  await provider.onClose();
  const closeMs = Date.now() - closing;
  gc();
  const end = rssMiB();
  const m = provider.metrics();
  const logs = Object.fromEntries(
    ['enqueued', 'sent', 'dropped', 'rejected'].map((k) => [k, metric(m, `confidence_log_batches_${k}_total`)]),
  );
  logs.queued = metric(m, 'confidence_log_batches_queued');
  logs.mibSent = Math.round(metric(m, 'confidence_log_bytes_sent_total') / MiB);
  const counters = await fake.counters();
  fake.stop();
  const r = {
    workload: 'rate max',
    engine: args.engine,
    durationS: Math.round(seconds),
    evaluations,
    evaluationsPerS: Math.round(evaluations / seconds),
    logs,
    serverRequests: counters.logs.requests,
    rssMiB: { start, afterWarmUp, samples, end },
    rssBoundMiB: MAX_RATE_RSS_BOUND / MiB,
    closeMs,
  };
  const failures = [];
  const check = (ok, message) => ok || failures.push(message);
  check(logs.dropped === 0, `${logs.dropped} log batches dropped`);
  check(logs.rejected === 0, `${logs.rejected} log batches rejected`);
  check(logs.queued === 0, `${logs.queued} log batches left queued`);
  check(logs.enqueued === logs.sent, `${logs.enqueued} enqueued, ${logs.sent} sent`);
  check(end - afterWarmUp <= MAX_RATE_RSS_BOUND / MiB, `RSS grew ${(end - afterWarmUp).toFixed(1)} MiB after warm-up`);
  r.failures = failures;
  if (args.json) {
    console.log(JSON.stringify(r));
  } else {
    console.log(`soak --rate max: ${r.durationS} s, ${r.engine} engine, direct API, apply on, default flushInterval
  evaluations      ${r.evaluations} (${r.evaluationsPerS}/s, one exposure each)
  log batches      enqueued ${logs.enqueued}, sent ${logs.sent}, dropped ${logs.dropped}, rejected ${logs.rejected}, queued ${logs.queued} (${logs.mibSent} MiB sent; server saw ${r.serverRequests} requests)
  close()          ${r.closeMs} ms
  RSS MiB          start ${start}, after warm-up ${afterWarmUp}, end ${end} (bound +${r.rssBoundMiB}; samples ${samples.join(', ')})
${failures.length ? `soak: FAILED\n  ${failures.join('\n  ')}` : 'soak: ok'}`);
  }
  process.exitCode = failures.length ? 1 : 0;
}

async function mixed() {
  const report = {
    engine: args.engine,
    durationS: durationMs / 1000,
    callers: CALLERS,
    evaluations: 0,
    errors: {},
    unexpectedErrors: 0,
    swapsServed: 0,
    statesApplied: 0,
    faults: { injected: 0, cdn: {}, logs: {} },
    logs: {},
    rssMiB: { start: rssMiB() },
    rssBoundMiB: RSS_BOUND / MiB,
    guestMemoryMiB: {},
  };

  const { fake, provider } = await soakProvider({
    stateUpdateInterval: 1000,
    flushInterval: 1000,
    requestTimeout: 1000,
    initializeTimeout: 10_000,
  });
  await OpenFeature.setProviderAndWait('soak', provider);
  const client = OpenFeature.getClient('soak');
  const guestMiB = () => Math.round((metric(provider.metrics(), 'confidence_guest_memory_bytes') / MiB) * 10) / 10;

  let running = true;

  async function caller(id) {
    for (let i = 0; running; i++) {
      const ctx = { targetingKey: `user-${id}-${i % 5000}`, tier: i % 3 === 0 ? 'gold' : 'free' };
      const results = await Promise.all([
        client.getBooleanDetails('banner.enabled', false, ctx),
        client.getNumberDetails('limits.max', 0, ctx),
        client.getBooleanDetails('comet.go', false, ctx),
      ]);
      for (const { errorCode } of results) {
        report.evaluations++;
        if (!errorCode) continue;
        report.errors[errorCode] = (report.errors[errorCode] ?? 0) + 1;
        if (!EXPECTED_CODES.has(errorCode)) report.unexpectedErrors++;
      }
      // Evaluations settle as microtasks: yield now and then so timers and I/O run.
      if (i % 20 === 19) await new Promise((r) => setImmediate(r));
    }
  }

  async function swapper() {
    // On a fixed schedule: a late swap (the callers keep the loop busy) does not push back the next.
    const start = Date.now();
    while (running) {
      const n = report.swapsServed + 1;
      await sleep(start + n * SWAP_EVERY_MS - Date.now());
      await fake.setStateBytes(secret, states[n % states.length], `"s${n}"`);
      report.swapsServed = n;
    }
  }

  /**
   * Faults per route and kind, exactly: before a route gets its next fault the current one is
   * lifted, and whatever the fake counted since is the lifted fault's.
   */
  const current = { cdn: null, logs: null };
  const seen = { cdn: 0, logs: 0 };
  async function liftFault(route) {
    await fake.setFault(route, 'none');
    const injected = (await fake.counters())[route].faults_injected;
    if (current[route]) {
      const kinds = report.faults[route];
      kinds[current[route]] = (kinds[current[route]] ?? 0) + injected - seen[route];
    }
    seen[route] = injected;
    current[route] = null;
  }

  async function faulter() {
    const kinds = Object.keys(FAULTS);
    for (let n = 0; running; n++) {
      await sleep(FAULT_EVERY_MS);
      const route = n % 2 === 0 ? 'cdn' : 'logs';
      const kind = kinds[Math.floor(n / 2) % kinds.length];
      await liftFault(route);
      await fake.setFault(route, { type: 'fail_next', n: 2, fault: FAULTS[kind] });
      current[route] = kind;
    }
  }

  const tasks = [...Array.from({ length: CALLERS }, (_, id) => caller(id)), swapper(), faulter()];
  // RSS climbs for the first 30-40 s (allocator arenas, V8 heap, log batches of a few MB each
  // second) and then holds; the bound applies from the end of warm-up.
  const warmUpMs = Math.min(60_000, durationMs / 2);
  await sleep(warmUpMs);
  gc();
  report.rssMiB.afterWarmUp = rssMiB();
  report.guestMemoryMiB.afterWarmUp = guestMiB();
  // RSS every 10 s (in the JSON report), to tell a plateau from a slope.
  report.rssMiB.samples = [];
  for (let left = durationMs - warmUpMs; left > 0; left -= 10_000) {
    await sleep(Math.min(left, 10_000));
    report.rssMiB.samples.push(rssMiB());
  }
  running = false;
  await Promise.all(tasks);
  await liftFault('cdn');
  await liftFault('logs');
  report.faults.injected = seen.cdn + seen.logs;
  // Let a request that met the last fault time out, so that every fault is counted by both sides.
  await sleep(1200);

  const beforeClose = provider.metrics();
  report.statesApplied = metric(beforeClose, 'confidence_state_swaps_total');
  report.guestMemoryMiB.end = guestMiB();
  const closing = Date.now();
  await OpenFeature.close();
  report.closeMs = Date.now() - closing;
  gc();
  report.rssMiB.end = rssMiB();

  // Every batch the engine handed over was accepted (delivered), dropped from the full backlog
  // (counted), or is still queued (pending: lost at close, so it must be 0).
  const m = provider.metrics();
  const produced = metric(m, 'confidence_log_batches_enqueued_total');
  const delivered = metric(m, 'confidence_log_batches_sent_total');
  const dropped = metric(m, 'confidence_log_batches_dropped_total');
  const failedAttempts = metric(m, 'confidence_log_upload_failures_total');
  const stateFailures = metric(m, 'confidence_state_failures_total');
  // The server's side, from its counters (fetching the batches themselves would cost more memory
  // than the soak measures: tens of MB per second of evaluations). Every upload attempt reaches
  // the server, which counts it and the fault it injected, if any. The client sees:
  // - 5xx, reset, slow (it outlasts requestTimeout): a failed attempt, retried. The fake stores
  //   nothing on 5xx and reset, but stores a slow batch once its delay is over, so the retry
  //   leaves a duplicate there. (A real server may likewise have read a batch before a reset:
  //   uploads are at-least-once.)
  // - garbage: a 200 with a junk body: delivered, and stored.
  // - truncate: a 200 whose body is cut. The fake stores nothing; a client that reads the answer
  //   counts a failed attempt and retries, one that ignores the body counts it delivered (a real
  //   server answering 200 has the batch). Either is accepted below.
  const counters = await fake.counters();
  const kinds = report.faults.logs;
  const n = (kind) => kinds[kind] ?? 0;
  report.logs = {
    produced,
    delivered,
    dropped,
    pending: produced - delivered - dropped,
    failedAttempts,
    serverRequests: counters.logs.requests,
    serverStored: counters.logs.requests - n('http503') - n('http500') - n('reset') - n('truncate'),
  };
  report.stateFailures = stateFailures;
  fake.stop();

  const failures = [];
  const check = (ok, message) => ok || failures.push(message);
  const { logs, faults } = report;
  check(report.evaluations > 0, 'no evaluation ran');
  check(report.unexpectedErrors === 0, `${report.unexpectedErrors} evaluations failed with unexpected codes`);
  check(report.statesApplied >= report.durationS / 4, `only ${report.statesApplied} states applied`);
  check(faults.injected > 0, 'no fault was injected');
  check(faults.injected === sum(faults.cdn) + sum(faults.logs), 'faults attributed do not add up');
  check(produced > 0, 'no log batch was produced');
  check(logs.pending === 0, `log batches: ${produced} produced, ${delivered + dropped} delivered or dropped`);
  check(
    logs.serverRequests === delivered + failedAttempts,
    `the server saw ${logs.serverRequests} uploads, the provider ${delivered} delivered + ${failedAttempts} failed`,
  );
  const surplus = failedAttempts - (n('http503') + n('http500') + n('reset') + n('slow'));
  check(surplus >= 0 && surplus <= n('truncate'), `${failedAttempts} failed uploads for ${JSON.stringify(kinds)}`);
  check(stateFailures === sum(faults.cdn), `${stateFailures} failed state fetches for ${sum(faults.cdn)} CDN faults`);
  const growth = report.rssMiB.end - report.rssMiB.afterWarmUp;
  check(growth * MiB <= RSS_BOUND, `RSS grew ${growth.toFixed(1)} MiB after warm-up (bound ${RSS_BOUND / MiB})`);
  // Guest linear memory (wasm engine) only grows until its instance is recycled.
  const guestGrowth = report.guestMemoryMiB.end - report.guestMemoryMiB.afterWarmUp;
  check(guestGrowth * MiB <= GUEST_BOUND, `guest memory grew ${guestGrowth.toFixed(1)} MiB after warm-up`);
  report.failures = failures;

  function sum(counts) {
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  if (args.json) {
    console.log(JSON.stringify(report));
  } else {
    const r = report;
    const l = r.logs;
    console.log(`soak: ${r.durationS} s, ${r.engine} engine, ${r.callers} callers
  evaluations      ${r.evaluations} (errors by code: ${JSON.stringify(r.errors)})
  states           ${r.swapsServed} served (every ${SWAP_EVERY_MS} ms), ${r.statesApplied} applied (polls every ~1 s)
  faults injected  ${r.faults.injected}: cdn ${JSON.stringify(r.faults.cdn)}, logs ${JSON.stringify(r.faults.logs)}
  log batches      produced ${l.produced}, delivered ${l.delivered}, dropped ${l.dropped}, pending ${l.pending}
  log uploads      ${l.failedAttempts} failed; server: ${l.serverRequests} requests, ${l.serverStored} stored (duplicates: slow)
  close()          ${r.closeMs} ms, final log upload included
  RSS MiB          start ${r.rssMiB.start}, after warm-up ${r.rssMiB.afterWarmUp}, end ${r.rssMiB.end} (bound +${r.rssBoundMiB}; peak sample ${Math.max(...r.rssMiB.samples)})
  guest memory MiB after warm-up ${r.guestMemoryMiB.afterWarmUp}, end ${r.guestMemoryMiB.end} (0 on the native engine)
${failures.length ? `soak: FAILED\n  ${failures.join('\n  ')}` : 'soak: ok'}`);
  }
  process.exitCode = failures.length ? 1 : 0;
}
