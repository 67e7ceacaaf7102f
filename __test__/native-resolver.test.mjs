// The native class against the loopback fake Confidence: the Promise lifecycle, synchronous
// evaluation, errors with stable codes, logs delivered on close, and a process that exits.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { encryptedState, officialWasm, ourWasm, secret } from './support/fixtures.mjs';
import { fakeNativeOptions } from './support/provider.mjs';
import { until } from './support/wait.mjs';

const require = createRequire(import.meta.url);
const { NativeResolver } = require('../index.js');

let fake;
before(async () => {
  fake = await startFakeConfidence();
  await fake.setState(secret, encryptedState);
});
after(() => fake.stop());

const options = (extra = {}) => fakeNativeOptions(fake, { wasmPath: ourWasm, ...extra });

test('initializes from the (encrypted) loopback CDN and resolves synchronously', async () => {
  const r = new NativeResolver(options());
  assert.throws(
    () => r.resolve([], '{}', false),
    (e) => e.code === 'NOT_READY',
  );
  await r.initialize(5000);
  const result = r.resolve(['flags/tutorial-feature'], JSON.stringify({ visitor_id: 'tutorial_visitor' }), false);
  const [flag] = result.flags;
  assert.equal(flag.flag, 'flags/tutorial-feature');
  assert.equal(flag.variant, 'flags/tutorial-feature/variants/exciting-welcome');
  assert.equal(flag.reason, 'RESOLVE_REASON_MATCH');
  assert.equal(JSON.parse(flag.valueJson).title, 'Welcome to Confidence!');
  assert.equal(result.resolveId.length, 32);
  assert.ok(result.resolveToken.length > 0, 'apply=false mints a token');
  r.applyFlag(result.resolveToken, 'flags/tutorial-feature');
  const status = r.status();
  assert.equal(status.ready, true);
  assert.equal(status.etag, '"v1"');
  const metrics = r.metrics();
  assert.match(metrics, /^confidence_state_updates_total 1$/m);
  assert.match(metrics, /^confidence_guest_memory_bytes \d+$/m);
  assert.match(metrics, /^confidence_resolver_instances 2$/m);
  await r.close(3000);
});

test("Confidence's released resolver runs behind the same class (CONFIDENCE_OFFICIAL_WASM)", async (t) => {
  const { path: official, skip } = officialWasm();
  if (skip) return t.skip(skip);
  const ours = new NativeResolver(options({ offline: true, initialState: readFileSync(encryptedState) }));
  const theirs = new NativeResolver(
    options({ offline: true, initialState: readFileSync(encryptedState), wasmPath: official }),
  );
  for (const ctx of [
    { visitor_id: 'tutorial_visitor' },
    { visitor_id: 'abc' },
    { visitor_id: 12 },
    { visitor_id: 1.5 },
    {},
  ]) {
    const strip = (r) =>
      r.flags
        .map(({ flag, variant, reason, valueJson, shouldApply }) => ({ flag, variant, reason, valueJson, shouldApply }))
        .sort((a, b) => a.flag.localeCompare(b.flag));
    const json = JSON.stringify(ctx);
    assert.deepEqual(strip(ours.resolve([], json, true)), strip(theirs.resolve([], json, true)), json);
  }
  await ours.close(100);
  await theirs.close(100);
});

test('every upload reaches the server by close(), with the protocol headers', async () => {
  await fake.control({ cmd: 'clear_logs' });
  const r = new NativeResolver(options({ flushIntervalMs: 60_000 }));
  await r.initialize(5000);
  for (let i = 0; i < 50; i++) r.resolve([], JSON.stringify({ visitor_id: `v${i}` }), true);
  await r.close(3000);
  const logs = await fake.logs();
  assert.ok(logs.length >= 1, 'the final flush uploaded');
  assert.equal(logs[0].path, '/v1/clientFlagLogs:write');
  assert.equal(logs[0].headers.authorization, `ClientSecret ${secret}`);
  assert.equal(logs[0].headers['content-type'], 'application/x-protobuf');
});

test('initialize rejects readably while the CDN fails, and the resolver recovers by itself', async () => {
  await fake.setFault('cdn', { type: 'status', code: 503 });
  const r = new NativeResolver(options());
  await assert.rejects(r.initialize(600), (e) => e.code === 'NOT_READY' && /503/.test(e.message));
  await fake.setFault('cdn', 'none');
  await until('the resolver to recover', () => r.status().ready, 5000);
  assert.equal(r.resolve(['flags/fallthrough-test-2'], JSON.stringify({ visitor_id: 'x' }), false).flags.length, 1);
  assert.ok(r.status().failures >= 1);
  await r.close(3000);
});

test('offline with an initial state resolves at once and never opens a connection', async () => {
  await fake.control({ cmd: 'reset' });
  const r = new NativeResolver(options({ offline: true, initialState: readFileSync(encryptedState) }));
  await r.initialize(100);
  assert.equal(r.resolve([], JSON.stringify({ visitor_id: 'tutorial_visitor' }), true).flags.length, 3);
  await r.close(1000);
  const { cdn, logs } = await fake.counters();
  assert.equal(cdn.requests + logs.requests, 0);
});

test('bad input is a clear error with a stable code, never a crash', async () => {
  assert.throws(
    () => new NativeResolver(options({ wasmPath: fileURLToPath(import.meta.url) })),
    (e) => {
      assert.equal(e.code, 'INVALID_MODULE');
      assert.match(e.message, /^wasmPath: .*not a usable wasm module/);
      return true;
    },
  );
  assert.throws(() => new NativeResolver(options({ encryptionKey: 'abc' })), /encryptionKey/);
  assert.throws(() => new NativeResolver(options({ cdnBaseUrl: 'http://example.com/' })), /http/);
  // A state without a credential for the configured secret would answer nothing but
  // "client secret not found": refused at construction, the secret never in the message.
  assert.throws(
    () =>
      new NativeResolver(
        options({ flagClientSecret: 'not-the-secret', offline: true, initialState: readFileSync(encryptedState) }),
      ),
    (e) =>
      e.code === 'INVALID_OPTION' &&
      /^initialState: .*no credential for this client secret/.test(e.message) &&
      !e.message.includes('not-the-secret'),
  );
  const ok = new NativeResolver(options({ offline: true, initialState: readFileSync(encryptedState) }));
  assert.throws(
    () => ok.resolve([], '{not json', false),
    (e) => e.code === 'INVALID_CONTEXT',
  );
  assert.throws(
    () => ok.applyFlag(Buffer.from([1, 2, 3]), 'flags/x'),
    (e) => e.code === 'RESOLVER_ERROR',
  );
  await ok.close(100);
});

test('a process that closes its resolver exits by itself', async () => {
  const script = `
    const { NativeResolver } = require(${JSON.stringify(require.resolve('../index.js'))});
    const r = new NativeResolver(${JSON.stringify(options())});
    r.initialize(5000).then(() => { r.resolve([], '{"visitor_id":"a"}', true); return r.close(3000); })
      .then(() => console.log('closed'), (e) => { console.error(e); process.exit(1); });`;
  // A child kept alive after close is killed at the bound, which fails the test.
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { timeout: 15_000 });
  assert.equal(stdout.trim(), 'closed');
});
