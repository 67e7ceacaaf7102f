// The native class under the loopback fake Confidence's faults, with our guest and (when
// CONFIDENCE_OFFICIAL_WASM names it) Confidence's released binary, which must answer as ours does.
// For every CDN fault: no crash, no hung promise, the last good state keeps answering, the
// failure is readable in status() and counted, and once the fault ends a new state (new ETag,
// different answers) is swapped in. For the log endpoint: an outage shorter than the backlog
// loses and duplicates no exposure, and close() delivers the last batch, also while an upload
// is in flight. close() stays bounded while requests hang.
//
// Every case has its own fake (faults are server-wide) and the cases run concurrently; the slow
// answer case shortens the request timeout (requestTimeoutMs) to keep the suite quick.
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { before, describe, test } from 'node:test';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import {
  clientResolverState,
  encryptedState,
  encryptionKey,
  officialWasm,
  ourWasm,
  plainState,
  secret,
} from './support/fixtures.mjs';
import { fakeNativeOptions, flagAssigned, metric } from './support/provider.mjs';
import { sleep, until, within } from './support/wait.mjs';

const require = createRequire(import.meta.url);
const { NativeResolver } = require('../index.js');
// [name, wasmPath, skip]: no wasmPath = the native engine (the crate linked into the addon).
const official = officialWasm();
const modules = [
  ['the native engine', undefined, false],
  ['our guest', ourWasm, false],
  ['the released binary', official.path, official.skip],
];

// ---------------------------------------------------------------------------------------------
// States as the CDN serves them (docs/state-cdn.md, "Payload and encryption")

/** AES-256-GCM, no associated data: nonce (12) ‖ ciphertext ‖ tag (16). */
function encrypt(key, plain) {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

// A: the encrypted fixture (account `confidence-test`). B: the same flags for account
// `confidence-demo-june`, whose bucketing salt moves some visitors to other variants.
const stateA = readFileSync(encryptedState);
const plainB = clientResolverState(readFileSync(plainState), 'confidence-demo-june');
const stateB = encrypt(Buffer.from(encryptionKey, 'hex'), plainB);
const stateBWithTheWrongKey = encrypt(randomBytes(32), plainB);

// ---------------------------------------------------------------------------------------------
// Helpers

/** Every exposure the server accepted: resolve id and the applied flag names, sorted. */
const assignments = (logs) => flagAssigned(logs).map((a) => [a.resolveId, a.flags.map((f) => f.flag).sort()]);

const probes = [...Array.from({ length: 40 }, (_, i) => ({ visitor_id: `v${i}` })), { visitor_id: 'tutorial_visitor' }];

/** What the resolver answers for every probe, without exposures. */
const answers = (r) =>
  probes.map((ctx) =>
    r
      .resolve([], JSON.stringify(ctx), false)
      .flags.map(({ flag, variant, reason, valueJson, shouldApply }) => ({
        flag,
        variant,
        reason,
        valueJson,
        shouldApply,
      }))
      .sort((a, b) => a.flag.localeCompare(b.flag)),
  );

const options = (fake, wasmPath, extra = {}) =>
  fakeNativeOptions(fake, { wasmPath, stateUpdateIntervalMs: 150, flushIntervalMs: 150, ...extra });

/** A fake serving state A and a resolver on it, both torn down after the test. */
async function started(t, wasmPath, extra) {
  const fake = await within(10_000, startFakeConfidence(), 'starting the fake');
  t.after(() => fake.stop());
  await fake.setStateBytes(secret, stateA, '"a"');
  const r = new NativeResolver(options(fake, wasmPath, extra));
  t.after(() => within(5000, r.close(500), 'close after the test').catch(() => {}));
  return { fake, r };
}

// Our guest's answers for A and B, offline: what every module must answer live.
let answersA;
let answersB;
before(async () => {
  const offline = (initialState) =>
    new NativeResolver({ flagClientSecret: secret, encryptionKey, wasmPath: ourWasm, offline: true, initialState });
  const [a, b] = [offline(stateA), offline(stateB)];
  [answersA, answersB] = [answers(a), answers(b)];
  await within(5000, Promise.all([a.close(100), b.close(100)]), 'closing the offline resolvers');
  assert.notDeepEqual(answersA, answersB, 'the two states answer some probes differently');
});

// ---------------------------------------------------------------------------------------------
// The cases

const cdnFaults = [
  { name: 'a 5xx answer', fault: { type: 'status', code: 503 }, error: /HTTP 503/, retried: true },
  {
    name: '429 with Retry-After',
    fault: { type: 'too_many_requests', retry_after_secs: 1 },
    error: /HTTP 429 \(retry after 1s\)/,
    retried: true,
  },
  {
    name: 'an answer slower than the request timeout',
    fault: { type: 'fail_next', n: 1, fault: { type: 'slow', ms: 4000 } },
    error: /timed out/,
    extra: { requestTimeoutMs: 1000 },
    waitMs: 10_000,
  },
  { name: 'a truncated body', fault: 'truncate', error: /state body incomplete/, retried: true },
  { name: 'garbage bytes', fault: 'garbage', error: /cannot decrypt state/ },
  { name: 'a connection reset', fault: 'reset', error: /network error/, retried: true },
  { name: 'a state encrypted with the wrong key', broken: stateBWithTheWrongKey, error: /authentication tag mismatch/ },
];

/**
 * Initialized on A; then the fault, with B waiting behind it (for `broken`, the broken body is
 * served as the new state); then the fault ends and B must be swapped in.
 */
async function cdnFault(t, wasmPath, { fault, broken, error, retried, extra, waitMs = 5000 }) {
  const { fake, r } = await started(t, wasmPath, extra);
  await within(10_000, r.initialize(5000), 'initialize');
  assert.deepEqual(answers(r), answersA);
  const healthy = r.status();
  assert.equal(healthy.etag, '"a"');

  if (fault) await fake.setFault('cdn', fault);
  await fake.setStateBytes(secret, broken ?? stateB, broken ? '"broken"' : '"b"');
  const lastGoodState = () => assert.deepEqual(answers(r), answersA, 'the last good state keeps answering');
  await until(
    'the failure to be recorded',
    () => {
      lastGoodState();
      return r.status().failures > healthy.failures;
    },
    waitMs,
  );
  const failing = r.status();
  assert.match(failing.lastError, error);
  assert.equal(failing.ready, true);
  assert.equal(failing.etag, '"a"');
  assert.ok(failing.consecutiveFailures >= 1);
  assert.ok(metric(r, 'confidence_state_failures_total') >= 1);
  assert.ok((await fake.counters()).cdn.faults_injected >= (fault ? 1 : 0));
  if (retried) {
    // Retries back off (to the poll interval here): no tight loop against a failing CDN. A fixed
    // window on purpose: the requests in it are counted.
    const before = (await fake.counters()).cdn.requests;
    await sleep(1000);
    const sent = (await fake.counters()).cdn.requests - before;
    assert.ok(sent >= 1 && sent <= 12, `${sent} requests in 1 s`);
    lastGoodState();
  }

  if (fault) await fake.setFault('cdn', 'none');
  if (broken) await fake.setStateBytes(secret, stateB, '"b"');
  await until('the new state', () => r.status().etag === '"b"', waitMs);
  assert.deepEqual(answers(r), answersB);
  const healed = r.status();
  assert.equal(healed.consecutiveFailures, 0);
  assert.equal(healed.updates, healthy.updates + 1);
  assert.match(healed.lastError, error, 'the last failure stays readable after recovery');
  await within(5000, r.close(3000), 'close');
}

/** The server refuses connections when the resolver starts, and comes back by itself. */
async function downAtStart(t, wasmPath) {
  const fake = await within(10_000, startFakeConfidence(), 'starting the fake');
  t.after(() => fake.stop());
  await fake.setStateBytes(secret, stateA, '"a"');
  await fake.setFault('cdn', { type: 'down', for_ms: 3000 });
  const refused = () =>
    fetch(fake.baseUrl, { signal: AbortSignal.timeout(500) }).then(
      () => false,
      () => true,
    );
  await until('the server to refuse connections', refused, 2000);
  const r = new NativeResolver(options(fake, wasmPath));
  t.after(() => within(5000, r.close(500), 'close after the test').catch(() => {}));

  await assert.rejects(within(5000, r.initialize(500), 'initialize'), (e) => {
    assert.equal(e.code, 'NOT_READY');
    assert.match(e.message, /network error/);
    return true;
  });
  assert.throws(
    () => r.resolve([], '{}', false),
    (e) => e.code === 'NOT_READY',
  );
  const down = r.status();
  assert.equal(down.ready, false);
  assert.ok(down.failures >= 1);
  assert.match(down.lastError, /network error/);

  await until('the server to come back and the state to load', () => r.status().ready, 10_000);
  assert.deepEqual(answers(r), answersA);
  await fake.setStateBytes(secret, stateB, '"b"');
  await until('the new state', () => r.status().etag === '"b"', 5000);
  assert.deepEqual(answers(r), answersB);
  assert.equal(r.status().consecutiveFailures, 0);
  await within(5000, r.close(3000), 'close');
}

/** close() neither waits for a hanging CDN request nor hangs on an upload that never ends. */
async function closeWhileRequestsHang(t, wasmPath) {
  const { fake, r } = await started(t, wasmPath);
  await within(10_000, r.initialize(5000), 'initialize');
  await fake.setFault('cdn', { type: 'slow', ms: 30_000 });
  await fake.setFault('logs', { type: 'slow', ms: 30_000 });
  r.resolve([], JSON.stringify({ visitor_id: 'v1' }), true);
  const hanging = async () => {
    const { cdn, logs } = await fake.counters();
    return cdn.faults_injected >= 1 && logs.faults_injected >= 1;
  };
  await until(
    'a poll and an upload to hang',
    () => {
      assert.deepEqual(answers(r), answersA);
      return hanging();
    },
    5000,
  );
  await assert.rejects(within(4000, r.close(1000), 'close'), (e) => {
    assert.equal(e.code, 'TIMEOUT');
    return true;
  });
}

/** close() while the flush loop's upload is in flight: that batch must not be sent twice. */
async function closeDuringUpload(t, wasmPath) {
  const { fake, r } = await started(t, wasmPath, { flushIntervalMs: 100 });
  await within(10_000, r.initialize(5000), 'initialize');
  await fake.setFault('logs', { type: 'slow', ms: 800 });
  const produced = new Set();
  for (let i = 0; i < 10; i++) produced.add(r.resolve([], JSON.stringify({ visitor_id: `c${i}` }), true).resolveId);
  await until('an upload to start', async () => (await fake.counters()).logs.requests >= 1, 5000);
  await within(5000, r.close(3000), 'close');
  // The fake keeps an upload once its slow answer is due, abandoned or not: wait for every one it received.
  await until('every upload the fake received to land', async () => {
    const { logs } = await fake.counters();
    return (await fake.logs()).length === logs.requests;
  });
  const ids = assignments(await fake.logs()).map(([id]) => id);
  assert.equal(new Set(ids).size, ids.length, 'no exposure arrived twice');
  assert.deepEqual(new Set(ids), produced);
}

/** Log uploads fail (503s, then resets) for a while, then recover; close() sends the rest. */
async function logOutage(t, wasmPath) {
  const { fake, r } = await started(t, wasmPath, { flushIntervalMs: 100 });
  await within(10_000, r.initialize(5000), 'initialize');
  // resolve id -> flags it applied, for every exposure produced.
  const produced = new Map();
  const produce = (round, n) => {
    for (let i = 0; i < n; i++) {
      const { resolveId, flags } = r.resolve([], JSON.stringify({ visitor_id: `r${round}-${i}` }), true);
      const applied = flags.filter((f) => f.shouldApply).map((f) => f.flag);
      assert.ok(applied.length > 0);
      produced.set(resolveId, applied.sort());
    }
  };
  const delivered = async () => assignments(await fake.logs());

  produce(0, 20);
  await until('the first exposures to arrive', async () => (await delivered()).length === 20, 5000);
  await fake.setFault('logs', { type: 'status', code: 503 });
  for (let round = 1; round <= 4; round++) {
    if (round === 3) await fake.setFault('logs', 'reset');
    produce(round, 20);
    const failedBefore = (await fake.counters()).logs.faults_injected;
    await until('an upload to fail', async () => (await fake.counters()).logs.faults_injected > failedBefore, 8000);
  }
  await assert.rejects(within(10_000, r.flush(), 'flush during the outage'), (e) => {
    assert.equal(e.code, 'UPLOAD_FAILED');
    assert.match(e.message, /^log upload failed/);
    return true;
  });
  assert.ok(metric(r, 'confidence_log_upload_failures_total') >= 4);
  assert.equal((await delivered()).length, 20, 'nothing was accepted during the outage');

  await fake.setFault('logs', 'none');
  await until('the backlog to arrive', async () => (await delivered()).length >= 100, 10_000);
  produce(5, 20);
  await within(5000, r.close(3000), 'close');

  const got = await delivered();
  const ids = got.map(([id]) => id);
  assert.equal(new Set(ids).size, ids.length, 'no exposure arrived twice');
  assert.deepEqual(new Map(got), produced, 'every exposure arrived, with the flags it applied');
  assert.equal(metric(r, 'confidence_log_batches_dropped_total'), 0);
}

describe('faults', { concurrency: true }, () => {
  for (const [name, wasmPath, skip] of modules) {
    describe(`with ${name}`, { concurrency: true, skip }, () => {
      for (const c of cdnFaults) test(`CDN: ${c.name}`, { timeout: 40_000 }, (t) => cdnFault(t, wasmPath, c));
      test('CDN: down at start, up later', { timeout: 40_000 }, (t) => downAtStart(t, wasmPath));
      test('close() while a poll and an upload hang', { timeout: 40_000 }, (t) => closeWhileRequestsHang(t, wasmPath));
      test('logs: close() during an upload', { timeout: 40_000 }, (t) => closeDuringUpload(t, wasmPath));
      test('logs: an outage shorter than the backlog, then close()', { timeout: 40_000 }, (t) =>
        logOutage(t, wasmPath),
      );
    });
  }
});
