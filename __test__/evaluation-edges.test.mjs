// Evaluation-path edges through the real OpenFeature SDK and the addon (an offline test
// provider): contexts JSON accepts but the resolver's parser would not (holes, lone surrogates,
// nesting deep enough to overflow a stack) and caller input large enough to bloat messages.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ErrorCode, OpenFeature } from '@openfeature/server-sdk';
import { createTestProvider } from 'confidence-openfeature-provider/testing';

import { clientFor } from './support/provider.mjs';

after(() => OpenFeature.close());

let provider;
let client;
before(async () => {
  provider = createTestProvider({
    flags: {
      gate: {
        variants: { on: { enabled: true }, off: { enabled: false } },
        rules: [{ when: { attribute: 'country', equals: 'SE' }, variant: 'on' }, { variant: 'off' }],
      },
    },
  });
  client = await clientFor(provider);
});

/** Bound on an error message that repeats a 1 MB input: the echoed 200 characters and our words. */
const MESSAGE_BOUND = 300;

/** `levels` objects `{ d: … }` around a leaf, built in a loop (any depth). */
const nested = (levels) => {
  let value = 1;
  for (let i = 0; i < levels; i++) value = { d: value };
  return value;
};

test('a context with holes in its arrays evaluates, the holes sent as null', async () => {
  // biome-ignore lint/suspicious/noSparseArray: the hole is what is tested
  const context = { targetingKey: 'u1', country: 'SE', tags: ['a', , 'b'], slots: new Array(3) };
  const details = await client.getBooleanDetails('gate.enabled', false, context);
  assert.deepEqual(
    [details.value, details.reason, details.errorCode, details.errorMessage],
    [true, 'TARGETING_MATCH', undefined, undefined],
  );
});

test('a context nested 10k deep is INVALID_CONTEXT naming the attribute, and the provider carries on', async () => {
  const details = await client.getBooleanDetails('gate.enabled', false, {
    targetingKey: 'u1',
    profile: nested(10_000),
  });
  assert.deepEqual([details.value, details.reason, details.errorCode], [false, 'ERROR', ErrorCode.INVALID_CONTEXT]);
  assert.ok(details.errorMessage.startsWith('invalid evaluation context: profile.d.d'), details.errorMessage);
  assert.match(details.errorMessage, /levels of nested arrays and objects$/);
  assert.ok(details.errorMessage.length <= MESSAGE_BOUND, `${details.errorMessage.length} characters`);
  const next = await client.getBooleanDetails('gate.enabled', false, { targetingKey: 'u1', country: 'SE' });
  assert.deepEqual([next.value, next.errorCode], [true, undefined]);
});

test('INVALID_CONTEXT names the attribute, never a JSON parser position', async () => {
  for (const context of [{ name: 'a\ud800' }, { 'k\udc00': 1 }, { profile: nested(127) }]) {
    const details = await client.getBooleanDetails('gate.enabled', false, { targetingKey: 'u1', ...context });
    assert.equal(details.errorCode, ErrorCode.INVALID_CONTEXT, details.errorMessage);
    const [attribute] = Object.keys(context);
    assert.ok(details.errorMessage.startsWith(`invalid evaluation context: ${attribute}`), details.errorMessage);
    assert.doesNotMatch(details.errorMessage, /line \d+ column \d+/);
  }
});

test('a 1 MB flag key gives a short error message, whatever the failure', async () => {
  const long = 'x'.repeat(1_000_000);
  const cases = [
    [long, ErrorCode.FLAG_NOT_FOUND],
    [`${long}..enabled`, ErrorCode.PARSE_ERROR],
    [`gate.${long}`, ErrorCode.TYPE_MISMATCH],
  ];
  for (const [flagKey, errorCode] of cases) {
    const details = await client.getBooleanDetails(flagKey, false, { targetingKey: 'u1', country: 'SE' });
    assert.equal(details.errorCode, errorCode);
    assert.ok(details.errorMessage.length <= MESSAGE_BOUND, `${errorCode}: ${details.errorMessage.length} characters`);
    assert.ok(details.errorMessage.includes('x…'), details.errorMessage);
  }
  const attribute = await client.getBooleanDetails('gate.enabled', false, { targetingKey: 'u1', [long]: Number.NaN });
  assert.equal(attribute.errorCode, ErrorCode.INVALID_CONTEXT);
  assert.ok(attribute.errorMessage.length <= MESSAGE_BOUND, `${attribute.errorMessage.length} characters`);
  assert.throws(
    () => provider.applyFlag('AAAA', long),
    (e) => e.message.startsWith('applyFlag(xxx') && e.message.length <= MESSAGE_BOUND,
  );
});
