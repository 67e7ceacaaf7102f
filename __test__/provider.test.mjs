// ConfidenceServerProviderLocal through the real OpenFeature SDK against the loopback fake
// Confidence serving the fixture state: values, variants, reasons, error codes, events, logs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';

import { ErrorCode, OpenFeature, ProviderEvents, ProviderStatus } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { encryptedState, encryptionKey, secret } from './support/fixtures.mjs';
import { clientFor, fakeProvider, flagAssigned, metric, recordEvents } from './support/provider.mjs';
import { exitOf, until } from './support/wait.mjs';

let fake;
before(async () => {
  fake = await startFakeConfidence();
  await fake.setState(secret, encryptedState);
});
after(async () => {
  await OpenFeature.close();
  fake.stop();
});

/** The targeting keys of the exposures the fake received whose key starts with `prefix`. */
const exposedKeys = async (prefix) =>
  flagAssigned(await fake.logs())
    .flatMap((a) => a.flags.map((f) => f.targetingKey))
    .filter((key) => key.startsWith(prefix));

test('values, variants, reasons and metadata through getClient().get*Details', async () => {
  const client = await clientFor(fakeProvider(fake));
  const welcome = await client.getStringDetails('tutorial-feature.title', 'fallback', {
    visitor_id: 'tutorial_visitor',
  });
  assert.equal(welcome.value, 'Welcome to Confidence!');
  assert.equal(welcome.variant, 'flags/tutorial-feature/variants/exciting-welcome');
  assert.equal(welcome.reason, 'TARGETING_MATCH');
  assert.equal(welcome.errorCode, undefined);
  assert.equal(welcome.flagMetadata.confidenceReason, 'MATCH');
  assert.equal(welcome.flagMetadata.stateEtag, '"v1"');
  assert.equal(typeof welcome.flagMetadata.assignmentOrigin, 'string');

  const whole = await client.getObjectDetails('tutorial-feature', {}, { visitor_id: 'tutorial_visitor' });
  assert.equal(whole.value.title, 'Welcome to Confidence!');

  // The encrypted fixture names the account `confidence-test`, which salts the buckets.
  const enabled = await client.getBooleanDetails('fallthrough-test-2.enabled', false, { visitor_id: 123 });
  assert.deepEqual(
    [enabled.value, enabled.variant, enabled.reason],
    [true, 'flags/fallthrough-test-2/variants/enabled', 'TARGETING_MATCH'],
  );
  const disabled = await client.getBooleanDetails('fallthrough-test-2.enabled', true, {
    visitor_id: 'MUy298GiXn8ExJ8A0A',
  });
  assert.deepEqual([disabled.value, disabled.variant], [false, 'flags/fallthrough-test-2/variants/disabled']);

  // No variant assigned: the caller's default, Confidence's reason as DEFAULT, no error.
  const none = await client.getStringDetails('tutorial-feature.title', 'fallback', {
    visitor_id: 'gueheg@example.com',
  });
  assert.deepEqual(
    [none.value, none.reason, none.errorCode, none.flagMetadata.confidenceReason],
    ['fallback', 'DEFAULT', undefined, 'NO_SEGMENT_MATCH'],
  );
});

test('every failure is the default value with an OpenFeature error code', async () => {
  const client = await clientFor(fakeProvider(fake));
  const ctx = { visitor_id: 'tutorial_visitor' };
  const cases = [
    ['getBooleanDetails', 'no-such-flag.enabled', false, ctx, ErrorCode.FLAG_NOT_FOUND, /no-such-flag/],
    [
      'getNumberDetails',
      'tutorial-feature.title',
      7,
      ctx,
      ErrorCode.TYPE_MISMATCH,
      /string.*number.*tutorial-feature\.title/,
    ],
    [
      'getStringDetails',
      'tutorial-feature.title.deeper',
      'd',
      ctx,
      ErrorCode.TYPE_MISMATCH,
      /not an object at tutorial-feature\.title/,
    ],
    ['getStringDetails', 'tutorial-feature.no_such_field', 'd', ctx, ErrorCode.TYPE_MISMATCH, /undefined/],
    ['getObjectDetails', 'tutorial-feature', { missing: 1 }, ctx, ErrorCode.TYPE_MISMATCH, /missing field "missing"/],
    ['getObjectDetails', 'tutorial-feature', [], ctx, ErrorCode.TYPE_MISMATCH, /arrays/],
    ['getBooleanDetails', 'tutorial-feature..x', false, ctx, ErrorCode.PARSE_ERROR, /invalid flag key/],
    [
      'getBooleanDetails',
      'fallthrough-test-2.enabled',
      false,
      { visitor_id: 'v', n: Number.NaN },
      ErrorCode.INVALID_CONTEXT,
      /n: NaN/,
    ],
    [
      'getBooleanDetails',
      'fallthrough-test-2.enabled',
      false,
      { visitor_id: 'v', m: new Map() },
      ErrorCode.INVALID_CONTEXT,
      /Map/,
    ],
    [
      'getBooleanDetails',
      'fallthrough-test-2.enabled',
      false,
      { visitor_id: 1.5 },
      ErrorCode.TARGETING_KEY_MISSING,
      /targeting key/,
    ],
  ];
  const cyclic = { visitor_id: 'v', nested: {} };
  cyclic.nested.self = cyclic.nested;
  cases.push([
    'getBooleanDetails',
    'fallthrough-test-2.enabled',
    false,
    cyclic,
    ErrorCode.INVALID_CONTEXT,
    /nested\.self: circular/,
  ]);
  for (const [method, key, fallback, context, code, message] of cases) {
    const d = await client[method](key, fallback, context);
    assert.equal(d.errorCode, code, `${key}: ${d.errorMessage}`);
    assert.match(d.errorMessage, message, key);
    assert.deepEqual(d.value, fallback, key);
    assert.equal(d.reason, 'ERROR', key);
  }
});

test('a failed initialize rejects readably, answers PROVIDER_NOT_READY, then becomes READY by itself', async () => {
  await fake.setFault('cdn', { type: 'status', code: 503 });
  try {
    const p = fakeProvider(fake, { initializeTimeout: 800 });
    const client = OpenFeature.getClient('failing-init');
    const seen = recordEvents(client, [ProviderEvents.Ready, ProviderEvents.Error]);
    await assert.rejects(OpenFeature.setProviderAndWait('failing-init', p), /could not load flag state.*503/);
    assert.equal(client.providerStatus, ProviderStatus.ERROR);
    const d = await client.getBooleanDetails('fallthrough-test-2.enabled', true, { visitor_id: 'x' });
    assert.deepEqual([d.value, d.errorCode], [true, ErrorCode.PROVIDER_NOT_READY]);
    await fake.setFault('cdn', 'none');
    await until('PROVIDER_READY after recovery', () => seen.length > 1);
    assert.deepEqual(
      seen.map((e) => e.event),
      [ProviderEvents.Error, ProviderEvents.Ready],
    );
    assert.equal(client.providerStatus, ProviderStatus.READY);
    const ok = await client.getBooleanDetails('fallthrough-test-2.enabled', false, { visitor_id: 123 });
    assert.deepEqual([ok.value, ok.errorCode], [true, undefined]);
  } finally {
    await fake.setFault('cdn', 'none');
  }
});

test('credentials the CDN refuses fail initialize at once, without waiting for the timeout', {
  timeout: 30_000,
}, async () => {
  await fake.setFault('cdn', { type: 'status', code: 401 });
  try {
    // Rejecting at all, long before a 10-minute initializeTimeout (the test's bound), is the point.
    await assert.rejects(
      OpenFeature.setProviderAndWait('refused', fakeProvider(fake, { initializeTimeout: 600_000 })),
      /401/,
    );
  } finally {
    await fake.setFault('cdn', 'none');
  }
});

test('STALE when the CDN stays unreachable past staleAfter, READY when it answers again', async () => {
  const client = await clientFor(fakeProvider(fake, { staleAfter: 1500 }));
  const seen = recordEvents(client, [ProviderEvents.Stale, ProviderEvents.Ready]);
  await fake.setFault('cdn', { type: 'status', code: 500 });
  try {
    await until('PROVIDER_STALE', () => seen.some((e) => e.event === ProviderEvents.Stale));
    assert.equal(client.providerStatus, ProviderStatus.STALE);
    assert.match(seen.at(-1).details.message, /no fresh flag state.*500/);
    // Stale is still served: the last good state answers.
    assert.equal(await client.getBooleanValue('fallthrough-test-2.enabled', false, { visitor_id: 123 }), true);
  } finally {
    await fake.setFault('cdn', 'none');
  }
  await until('PROVIDER_READY after STALE', () => seen.at(-1).event === ProviderEvents.Ready);
  assert.equal(client.providerStatus, ProviderStatus.READY);
});

test('bulk resolve answers many flags from one state; applyFlag logs one exposure later', async () => {
  const p = fakeProvider(fake);
  await clientFor(p);
  const bundle = await p.resolve({ visitor_id: 'tutorial_visitor' });
  assert.deepEqual(Object.keys(bundle.flags).sort(), ['fallthrough-test-1', 'fallthrough-test-2', 'tutorial-feature']);
  const tutorial = bundle.flags['tutorial-feature'];
  assert.deepEqual(
    [tutorial.reason, tutorial.variant, tutorial.value.title],
    ['MATCH', 'flags/tutorial-feature/variants/exciting-welcome', 'Welcome to Confidence!'],
  );
  assert.equal(bundle.errorCode, undefined);
  assert.ok(bundle.resolveToken.length > 0);
  p.applyFlag(bundle.resolveToken, 'tutorial-feature');
  assert.throws(() => p.applyFlag('', 'tutorial-feature'), TypeError);

  const some = await p.resolve({ visitor_id: 'tutorial_visitor' }, ['tutorial-feature']);
  assert.deepEqual(Object.keys(some.flags), ['tutorial-feature']);
  const bad = await p.resolve({ n: Number.POSITIVE_INFINITY });
  assert.deepEqual([bad.errorCode, Object.keys(bad.flags).length], [ErrorCode.INVALID_CONTEXT, 0]);
});

test('disableLogUpload: fresh state from the CDN, and no log leaves, not even on close', async () => {
  const p = fakeProvider(fake, { disableLogUpload: true, flushInterval: 1000 });
  const client = await clientFor(p);
  for (let i = 0; i < 10; i++) {
    const d = await client.getBooleanDetails('fallthrough-test-2.enabled', false, { visitor_id: `quiet-${i}` });
    assert.equal(d.errorCode, undefined, d.errorMessage);
  }
  // A flush round of the background loop has taken the evaluations' logs (and must not send them).
  await until('a flush round', () => metric(p, 'confidence_log_batches_enqueued_total') >= 1);
  await p.flush();
  await p.onClose();
  assert.deepEqual(await exposedKeys('quiet-'), [], 'no exposure of this provider was uploaded');
  assert.match(p.metrics(), /confidence_state_fetches_total\S* [1-9]/, 'states were fetched');
});

test('logs reach the server by close, and close lets the process go', async () => {
  await fake.control({ cmd: 'clear_logs' });
  const p = fakeProvider(fake, { flushInterval: 3_600_000 });
  const client = await clientFor(p);
  for (let i = 0; i < 20; i++)
    await client.getBooleanValue('fallthrough-test-2.enabled', false, { visitor_id: `user-${i}` });
  assert.equal((await fake.logs()).length, 0, 'nothing uploaded before close with an hour-long flush interval');
  await OpenFeature.clearProviders();
  const logs = await fake.logs();
  assert.ok(logs.length >= 1, 'the final flush uploaded');
  assert.equal(logs[0].headers.authorization, `ClientSecret ${secret}`);
  const exposed = await exposedKeys('user-'); // earlier tests' providers also close here
  assert.deepEqual(exposed.sort(), Array.from({ length: 20 }, (_, i) => `user-${i}`).sort(), 'each exposure once');

  // A process that evaluates and closes exits by itself: no timer, socket or thread keeps it.
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { OpenFeature } from '@openfeature/server-sdk';
       import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
       const p = new ConfidenceServerProviderLocal(${JSON.stringify({ flagClientSecret: secret, encryptionKey, cdnBaseUrl: fake.baseUrl, apiBaseUrl: fake.baseUrl })});
       await OpenFeature.setProviderAndWait(p);
       await OpenFeature.getClient().getBooleanValue('fallthrough-test-2.enabled', false, { visitor_id: 'exit' });
       await OpenFeature.close();`,
    ],
    { cwd: new URL('..', import.meta.url), stdio: 'inherit' },
  );
  assert.equal(await exitOf(child, 15_000), 0);
});

test('options are validated at construction, naming the option', () => {
  const base = { flagClientSecret: secret };
  const cases = [
    [{}, TypeError, /flagClientSecret is required/],
    [{ ...base, encryptionKey: 'abc' }, TypeError, /encryptionKey/],
    [{ ...base, stateUpdateInterval: 999 }, RangeError, /stateUpdateInterval/],
    [{ ...base, flushInterval: 1.5 }, TypeError, /flushInterval/],
    [{ ...base, initializeTimeout: -1 }, RangeError, /initializeTimeout/],
    [{ ...base, cdnBaseUrl: 'http://example.com' }, TypeError, /cdnBaseUrl.*loopback/],
    [{ ...base, apiBaseUrl: 'not a url' }, TypeError, /apiBaseUrl/],
    [{ ...base, offline: true }, RangeError, /initialState/],
    [{ ...base, initialState: 'bytes' }, TypeError, /initialState/],
    [{ ...base, materializationStore: {} }, TypeError, /materializationStore/],
    [{ ...base, logger: console.log }, TypeError, /logger/],
    [{ ...base, fetch: globalThis.fetch }, TypeError, /unknown option "fetch".*cdnBaseUrl/],
    [{ ...base, wasmPath: '/nonexistent/resolver.wasm' }, TypeError, /wasmPath/],
    [{ ...base, engine: 'v8' }, TypeError, /engine must be 'native' or 'wasm'/],
    [{ ...base, requestTimeout: 0 }, RangeError, /requestTimeout/],
    [{ ...base, disableLogUpload: 'yes' }, TypeError, /disableLogUpload/],
    [{ ...base, engine: 'native', wasmPath: '/some/resolver.wasm' }, TypeError, /wasmPath.*engine: 'wasm'/],
    [{ ...base, initialState: readFileSync(new URL(import.meta.url)) }, TypeError, /initialState/],
  ];
  for (const [options, type, message] of cases) {
    assert.throws(
      () => new ConfidenceServerProviderLocal(options),
      (e) => e instanceof type && message.test(e.message),
      JSON.stringify(Object.keys(options)),
    );
  }
});
