#!/usr/bin/env node
// `npm run soak [-- --duration <s>] [--engine native|wasm] [--json]`: evaluations at full speed
// from several async callers while the loopback fake Confidence changes the state every 200 ms
// and fails its CDN and log routes on a schedule, then close(). Exits non-zero when:
// - an evaluation fails with an unexpected code;
// - a log batch is unaccounted for;
// - RSS grows past its bound after warm-up;
// - or the process does not end by itself.
//
// The provider polls every second (its minimum `stateUpdateInterval`), so it applies whichever
// of the 200 ms states is current at each poll: the report counts both.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { ErrorCode, OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { buildTestState } from 'confidence-openfeature-provider/testing';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '180' },
    engine: { type: 'string', default: 'native' },
    json: { type: 'boolean', default: false },
  },
});
const durationMs = Math.max(5, Number(args.duration)) * 1000;
const MiB = 2 ** 20;
/** RSS may grow this much from the end of warm-up to the end (allocator and V8 heap noise). */
const RSS_BOUND = 64 * MiB;
const CALLERS = 4;
const SWAP_EVERY_MS = 200;
const FAULT_EVERY_MS = 1500;
/** Faults cycled over both routes, each for the next two requests. */
const FAULTS = [
  { type: 'status', code: 503 },
  { type: 'reset' },
  { type: 'slow', ms: 1500 },
  { type: 'garbage' },
  { type: 'truncate' },
  { type: 'status', code: 500 },
];
/** Codes an evaluation may legitimately end with: `comet` is missing from every other state. */
const EXPECTED_CODES = new Set([ErrorCode.FLAG_NOT_FOUND]);

if (!process.env.FAKE_CONFIDENCE_BIN) {
  const triple = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1];
  process.env.FAKE_CONFIDENCE_BIN = join(root, 'target', triple, 'release', 'fake-confidence');
  if (!existsSync(process.env.FAKE_CONFIDENCE_BIN)) {
    const built = spawnSync('cargo', ['build', '--release', '-p', 'fake-confidence'], { cwd: root, stdio: 'inherit' });
    if (built.status !== 0) process.exit(built.status ?? 1);
  }
}
const { startFakeConfidence } = await import('../__test__/support/fake-confidence.mjs');

const secret = 'soak-secret';
/** States that differ in values, rollout and which flags exist, so swaps change flags. */
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

const fake = await startFakeConfidence();
await fake.setStateBytes(secret, states[0], '"s0"');
const provider = new ConfidenceServerProviderLocal({
  flagClientSecret: secret,
  engine: args.engine,
  cdnBaseUrl: fake.baseUrl,
  apiBaseUrl: fake.baseUrl,
  stateUpdateInterval: 1000,
  flushInterval: 1000,
  requestTimeout: 1000,
  initializeTimeout: 10_000,
  logger: { error: () => {}, warn: () => {}, info: () => {}, debug: () => {} },
});
await OpenFeature.setProviderAndWait('soak', provider);
const client = OpenFeature.getClient('soak');

const report = {
  engine: args.engine,
  durationS: durationMs / 1000,
  evaluations: 0,
  errors: {},
  unexpectedErrors: 0,
  swapsServed: 0,
  statesApplied: 0,
  faultsInjected: 0,
  logs: {},
  rssMiB: {},
  guestMemoryMiB: {},
  ok: false,
};
const rss = () => process.memoryUsage().rss;
report.rssMiB.start = rss() / MiB;

let running = true;
async function caller(id) {
  let i = 0;
  while (running) {
    const ctx = { targetingKey: `user-${id}-${i % 5000}`, tier: i % 3 === 0 ? 'gold' : 'free' };
    const results = await Promise.all([
      client.getBooleanDetails('banner.enabled', false, ctx),
      client.getNumberDetails('limits.max', 0, ctx),
      client.getBooleanDetails('comet.go', false, ctx),
    ]);
    for (const r of results) {
      report.evaluations++;
      if (r.errorCode) {
        report.errors[r.errorCode] = (report.errors[r.errorCode] ?? 0) + 1;
        if (!EXPECTED_CODES.has(r.errorCode)) report.unexpectedErrors++;
      }
    }
    // Let timers (swaps, faults, the provider's watcher) run between bursts.
    if (++i % 50 === 0) await new Promise((r) => setImmediate(r));
  }
}

const swapper = setInterval(() => {
  report.swapsServed++;
  const n = report.swapsServed;
  fake.setStateBytes(secret, states[n % states.length], `"s${n}"`).catch(() => {});
}, SWAP_EVERY_MS);
let faultNo = 0;
const faulter = setInterval(() => {
  const route = faultNo % 2 === 0 ? 'cdn' : 'logs';
  const fault = FAULTS[Math.floor(faultNo / 2) % FAULTS.length];
  faultNo++;
  fake.setFault(route, { type: 'fail_next', n: 2, fault }).catch(() => {});
}, FAULT_EVERY_MS);

const callers = Array.from({ length: CALLERS }, (_, id) => caller(id));
const warmUpMs = Math.min(10_000, durationMs / 4);
await sleep(warmUpMs);
global.gc?.();
report.rssMiB.afterWarmUp = rss() / MiB;
report.guestMemoryMiB.afterWarmUp = metric(provider.metrics(), 'confidence_guest_memory_bytes') / MiB;
await sleep(durationMs - warmUpMs);
running = false;
await Promise.all(callers);
clearInterval(swapper);
clearInterval(faulter);
await fake.setFault('cdn', 'none');
await fake.setFault('logs', 'none');

const before = provider.metrics();
report.statesApplied = metric(before, 'confidence_state_swaps_total');
report.guestMemoryMiB.end = metric(before, 'confidence_guest_memory_bytes') / MiB;
await OpenFeature.close();
const after = provider.metrics();
const counters = await fake.counters();
report.faultsInjected = counters.cdn.faults_injected + counters.logs.faults_injected;
const produced = metric(after, 'confidence_log_batches_enqueued_total');
const delivered = metric(after, 'confidence_log_batches_sent_total');
const dropped = metric(after, 'confidence_log_batches_dropped_total');
const received = await fake.logCount();
report.logs = { produced, delivered, dropped, pending: produced - delivered - dropped, receivedByServer: received };
fake.stop();
global.gc?.();
report.rssMiB.end = rss() / MiB;
for (const k of Object.keys(report.rssMiB)) report.rssMiB[k] = Math.round(report.rssMiB[k] * 10) / 10;
for (const k of Object.keys(report.guestMemoryMiB))
  report.guestMemoryMiB[k] = Math.round(report.guestMemoryMiB[k] * 10) / 10;

const failures = [];
if (report.evaluations === 0) failures.push('no evaluations ran');
if (report.unexpectedErrors > 0) failures.push(`${report.unexpectedErrors} evaluations failed with unexpected codes`);
if (report.statesApplied < 2) failures.push('the provider applied fewer than 2 states');
if (report.faultsInjected === 0) failures.push('no fault was injected');
if (report.logs.pending !== 0) failures.push(`${report.logs.pending} log batches unaccounted for after close`);
// A timed-out upload the server did store is sent again: the server may count more, never fewer.
if (received < delivered) failures.push(`the server received ${received} batches, the provider counted ${delivered}`);
const growth = (report.rssMiB.end - report.rssMiB.afterWarmUp) * MiB;
if (growth > RSS_BOUND)
  failures.push(`RSS grew ${(growth / MiB).toFixed(1)} MiB after warm-up (bound ${RSS_BOUND / MiB})`);
report.rssBoundMiB = RSS_BOUND / MiB;
report.ok = failures.length === 0;
report.failures = failures;

if (args.json) {
  console.log(JSON.stringify(report));
} else {
  console.log(`soak: ${report.durationS} s on the ${report.engine} engine, ${CALLERS} callers`);
  console.log(`  evaluations       ${report.evaluations} (errors by code: ${JSON.stringify(report.errors)})`);
  console.log(
    `  states            ${report.swapsServed} served every ${SWAP_EVERY_MS} ms, ${report.statesApplied} applied`,
  );
  console.log(`  faults injected   ${report.faultsInjected} (CDN and logs: 5xx, reset, slow, garbage, truncated)`);
  const l = report.logs;
  console.log(
    `  log batches       produced ${l.produced}, delivered ${l.delivered}, dropped ${l.dropped}, pending ${l.pending}; server received ${l.receivedByServer}`,
  );
  const r = report.rssMiB;
  console.log(
    `  RSS (MiB)         start ${r.start}, after warm-up ${r.afterWarmUp}, end ${r.end} (bound +${RSS_BOUND / MiB})`,
  );
  console.log(`  guest memory MiB  ${report.guestMemoryMiB.afterWarmUp} -> ${report.guestMemoryMiB.end}`);
  console.log(report.ok ? 'soak: ok' : `soak: FAILED\n  ${failures.join('\n  ')}`);
}
// No process.exit: the process must end by itself once the provider is closed.
process.exitCode = report.ok ? 0 : 1;
