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
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { officialWasm } from './support/provider.mjs';

const require = createRequire(import.meta.url);
const { NativeResolver } = require('../index.js');

const fixtures = fileURLToPath(new URL('../fixtures/', import.meta.url));
const secret = 'mkjJruAATQWjeY7foFIWfVAcBWnci2YF';
const encryptionKey = readFileSync(`${fixtures}encryption_key_test.hex`, 'utf8').trim();
const ourWasm = fileURLToPath(new URL('../wasm/confidence_resolver.wasm', import.meta.url));
// [name, wasmPath, skip]: no wasmPath = the native engine (the crate linked into the addon).
const official = officialWasm();
const modules = [
  ['the native engine', undefined, false],
  ['our guest', ourWasm, false],
  ['the released binary', official.path, official.skip],
];

// ---------------------------------------------------------------------------------------------
// States as the CDN serves them (docs/state-cdn.md, "Payload and encryption")

const varint = (n) => {
  const out = [];
  for (; n > 0x7f; n = Math.floor(n / 0x80)) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
};
const lengthDelimited = (tag, bytes) => Buffer.concat([Buffer.from([tag]), varint(bytes.length), bytes]);

/** `ClientResolverState{state = 1, account = 2}` (docs/wire-format.md, "Resolver state"). */
const clientResolverState = (state, account) =>
  Buffer.concat([lengthDelimited(0x0a, state), lengthDelimited(0x12, Buffer.from(account))]);

/** AES-256-GCM, no associated data: nonce (12) ‖ ciphertext ‖ tag (16). */
function encrypt(key, plain) {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

// A: the encrypted fixture (account `confidence-test`). B: the same flags for account
// `confidence-demo-june`, whose bucketing salt moves some visitors to other variants.
const stateA = readFileSync(`${fixtures}resolver_state_encrypted.pb`);
const plainB = clientResolverState(readFileSync(`${fixtures}resolver_state_current.pb`), 'confidence-demo-june');
const stateB = encrypt(Buffer.from(encryptionKey, 'hex'), plainB);
const stateBWithTheWrongKey = encrypt(randomBytes(32), plainB);

// ---------------------------------------------------------------------------------------------
// Logs as the server received them (docs/wire-format.md, "Log upload messages" and "Events")

/** The fields of one protobuf message as [number, value]; length-delimited values as Buffers. */
function* fields(buf) {
  let i = 0;
  const varintAt = () => {
    let n = 0;
    for (let shift = 1; ; shift *= 0x80) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++];
      n += (b & 0x7f) * shift;
      if (!(b & 0x80)) return n;
    }
  };
  while (i < buf.length) {
    const tag = varintAt();
    const [number, wire] = [Math.floor(tag / 8), tag & 7];
    if (wire === 0) yield [number, varintAt()];
    else if (wire === 2) {
      const len = varintAt();
      if (i + len > buf.length) throw new Error('truncated field');
      yield [number, buf.subarray(i, i + len)];
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`wire type ${wire}`);
  }
}

/** Every `FlagAssigned` of every accepted upload: resolve id (10) and applied flag names (15 → 1). */
function assignments(logs) {
  const out = [];
  for (const log of logs) {
    for (const [number, assigned] of fields(Buffer.from(log.body, 'base64'))) {
      if (number !== 1) continue;
      let resolveId = '';
      const flags = [];
      for (const [n, v] of fields(assigned)) {
        if (n === 10) resolveId = v.toString();
        if (n === 15) for (const [m, f] of fields(v)) if (m === 1) flags.push(f.toString());
      }
      out.push([resolveId, flags.sort()]);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Bounds an await: a hung promise fails its test instead of stalling the run. */
async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `cond` until it holds, checking `meanwhile` on every round; fails after `ms`. */
async function until(ms, what, cond, meanwhile = () => {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    meanwhile();
    if (await cond()) return;
    assert.ok(Date.now() < deadline, `timed out after ${ms} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A host counter from the Prometheus text. */
const metric = (r, name) => Number(r.metrics().match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1]);

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

const options = (fake, wasmPath, extra = {}) => ({
  flagClientSecret: secret,
  encryptionKey,
  wasmPath,
  cdnBaseUrl: fake.baseUrl,
  apiBaseUrl: fake.baseUrl,
  stateUpdateIntervalMs: 150,
  flushIntervalMs: 150,
  ...extra,
});

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
  await until(waitMs, 'the failure to be recorded', () => r.status().failures > healthy.failures, lastGoodState);
  const failing = r.status();
  assert.match(failing.lastError, error);
  assert.equal(failing.ready, true);
  assert.equal(failing.etag, '"a"');
  assert.ok(failing.consecutiveFailures >= 1);
  assert.ok(metric(r, 'confidence_state_failures_total') >= 1);
  assert.ok((await fake.counters()).cdn.faults_injected >= (fault ? 1 : 0));
  if (retried) {
    // Retries back off (to the poll interval here): no tight loop against a failing CDN.
    const before = (await fake.counters()).cdn.requests;
    await sleep(1000);
    const sent = (await fake.counters()).cdn.requests - before;
    assert.ok(sent >= 1 && sent <= 12, `${sent} requests in 1 s`);
    lastGoodState();
  }

  if (fault) await fake.setFault('cdn', 'none');
  if (broken) await fake.setStateBytes(secret, stateB, '"b"');
  await until(waitMs, 'the new state', () => r.status().etag === '"b"');
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
  await until(2000, 'the server to refuse connections', refused);
  const r = new NativeResolver(options(fake, wasmPath));
  t.after(() => within(5000, r.close(500), 'close after the test').catch(() => {}));

  await assert.rejects(within(5000, r.initialize(500), 'initialize'), (e) => {
    assert.match(e.message, /^NOT_READY: .*network error/);
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

  await until(10_000, 'the server to come back and the state to load', () => r.status().ready);
  assert.deepEqual(answers(r), answersA);
  await fake.setStateBytes(secret, stateB, '"b"');
  await until(5000, 'the new state', () => r.status().etag === '"b"');
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
  await until(5000, 'a poll and an upload to hang', hanging, () => assert.deepEqual(answers(r), answersA));
  await assert.rejects(within(4000, r.close(1000), 'close'), (e) => {
    assert.match(e.message, /^TIMEOUT: /);
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
  await until(5000, 'an upload to start', async () => (await fake.counters()).logs.requests >= 1);
  await within(5000, r.close(3000), 'close');
  // Whatever was sent lands within one slow answer, abandoned or not.
  await sleep(1100);
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
  await until(5000, 'the first exposures to arrive', async () => (await delivered()).length === 20);
  await fake.setFault('logs', { type: 'status', code: 503 });
  for (let round = 1; round <= 4; round++) {
    if (round === 3) await fake.setFault('logs', 'reset');
    produce(round, 20);
    const failedBefore = (await fake.counters()).logs.faults_injected;
    await until(8000, 'an upload to fail', async () => (await fake.counters()).logs.faults_injected > failedBefore);
  }
  await assert.rejects(within(10_000, r.flush(), 'flush during the outage'), (e) => {
    assert.match(e.message, /^UPLOAD_FAILED: log upload failed/);
    return true;
  });
  assert.ok(metric(r, 'confidence_log_upload_failures_total') >= 4);
  assert.equal((await delivered()).length, 20, 'nothing was accepted during the outage');

  await fake.setFault('logs', 'none');
  await until(10_000, 'the backlog to arrive', async () => (await delivered()).length >= 100);
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
