// The test kit (`confidence-openfeature-provider/testing`) and what it makes testable: states
// from plain descriptions, exposures read back, sticky assignments through a materialization
// store, and CONFIGURATION_CHANGED when the CDN serves a changed state.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { ErrorCode, OpenFeature, ProviderEvents } from '@openfeature/server-sdk';
import { InMemoryMaterializationStore } from 'confidence-openfeature-provider';
import {
  buildTestState,
  createTestProvider,
  takeExposures,
  takeFlagLogs,
} from 'confidence-openfeature-provider/testing';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { clientFor, fakeProvider, quietLogger, recordEvents } from './support/provider.mjs';
import { until } from './support/wait.mjs';

after(() => OpenFeature.close());

const onOff = { on: { enabled: true }, off: { enabled: false } };

test('a described state resolves with real targeting, and the exposures can be read back', async () => {
  const provider = createTestProvider({
    flags: {
      'new-checkout': {
        variants: onOff,
        rules: [
          { when: { attribute: 'country', in: ['SE', 'NO'] }, variant: 'on' },
          {
            when: { all: [{ attribute: 'age', gte: 18 }, { not: { attribute: 'plan', equals: 'free' } }] },
            variant: 'on',
          },
          { variant: 'off' },
        ],
      },
      banner: {
        variants: { a: { text: 'Hi', size: 3 } },
        rules: [{ when: { attribute: 'app.version', versionGte: '2.0.0' }, variant: 'a' }],
      },
    },
  });
  const client = await clientFor(provider);
  const enabled = (ctx) => client.getBooleanValue('new-checkout.enabled', false, ctx);
  assert.equal(await enabled({ targetingKey: 'u1', country: 'SE' }), true);
  assert.equal(await enabled({ targetingKey: 'u2', country: 'US', age: 30, plan: 'pro' }), true);
  assert.equal(await enabled({ targetingKey: 'u3', country: 'US', age: 30, plan: 'free' }), false);
  assert.equal(await client.getNumberValue('banner.size', 0, { targetingKey: 'u4', app: { version: '2.1.0' } }), 3);
  const old = await client.getNumberDetails('banner.size', 0, { targetingKey: 'u5', app: { version: '1.9.9' } });
  assert.deepEqual([old.value, old.reason, old.flagMetadata.confidenceReason], [0, 'DEFAULT', 'NO_SEGMENT_MATCH']);
  await client.getBooleanValue('new-checkout.enabled', false, { targetingKey: 'quiet', _confidence_skip_apply: true });

  const exposures = await takeExposures(provider);
  const summary = exposures.map((e) => `${e.flag}:${e.targetingKey}:${e.variant?.split('/').pop() ?? e.reason}`);
  assert.deepEqual(
    summary.sort(),
    ['banner:u4:a', 'new-checkout:u1:on', 'new-checkout:u2:on', 'new-checkout:u3:off'].sort(),
  );
  assert.deepEqual(await takeExposures(provider), [], 'taking empties the log');
  await client.getBooleanValue('new-checkout.enabled', false, { targetingKey: 'late', country: 'SE' });
  const logs = await takeFlagLogs(provider);
  const assigned = logs.flatMap((l) => l.flagAssigned).flatMap((a) => a.flags);
  assert.deepEqual(
    assigned.map((f) => [f.flag, f.targetingKey]),
    [['flags/new-checkout', 'late']],
  );
  assert.ok(logs.some((l) => l.flagResolveInfo.some((i) => i.flag === 'flags/new-checkout')));
});

test('bad descriptions are a TypeError naming the problem', () => {
  assert.throws(
    () => buildTestState({ flags: { f: { variants: onOff, rules: [{ variant: 'blue' }] } } }),
    (e) => e instanceof TypeError && /flags\["f"\]\.rules\[0\]\.variant/.test(e.message) && /blue/.test(e.message),
  );
  assert.throws(() => buildTestState({ flags: { f: { variants: onOff, rules: [{ split: { on: 0 } }] } } }), TypeError);
  assert.throws(() => buildTestState({ flags: { 'Bad Name': { variants: onOff } } }), TypeError);
});

const sticky = {
  flags: {
    experiment: {
      variants: { control: { color: 'gray' }, treatment: { color: 'green' } },
      rules: [{ split: { control: 1, treatment: 1 }, sticky: 'experiment-assignments' }],
    },
  },
};

test('sticky assignments: written to the store, then served from it', async () => {
  const store = new InMemoryMaterializationStore();
  const client = await clientFor(createTestProvider(sticky, { materializationStore: store }));
  const first = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.equal(first.errorCode, undefined, first.errorMessage);
  await until('the assignment is written', () => store.entries().length === 1);
  const [[materialization, unit, rule, variant]] = store.entries();
  assert.deepEqual([materialization, unit, variant], ['experiment-assignments', 'user-1', first.variant]);

  // A stored assignment wins over bucketing: store the other variant and evaluate again.
  const other = variant.endsWith('/control') ? 'treatment' : 'control';
  await store.writeMaterializations([
    { op: 'variant', unit, materialization, rule, variant: `flags/experiment/variants/${other}` },
  ]);
  const again = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.equal(again.variant, `flags/experiment/variants/${other}`);
});

test('a store that fails its reads fails the evaluation with GENERAL; no store at all says so', async () => {
  const broken = { readMaterializations: async () => Promise.reject(new Error('store down')) };
  const client = await clientFor(createTestProvider(sticky, { materializationStore: broken }));
  const d = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.deepEqual([d.value, d.errorCode], ['none', ErrorCode.GENERAL]);
  assert.match(d.errorMessage, /store down/);

  const bare = await clientFor(createTestProvider(sticky));
  const n = await bare.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.deepEqual([n.value, n.errorCode], ['none', ErrorCode.GENERAL]);
  assert.match(n.errorMessage, /requires materializations/);
});

test('CONFIGURATION_CHANGED names the flags a new CDN state changed', async () => {
  const fake = await startFakeConfidence();
  try {
    const secret = 'events-secret';
    const serve = (flags, etag) =>
      fake.control({
        cmd: 'set_state',
        secret,
        base64: buildTestState({ clientSecret: secret, flags }).toString('base64'),
        etag,
      });
    const v1 = {
      a: { variants: onOff, rules: [{ variant: 'on' }] },
      b: { variants: onOff, rules: [{ variant: 'off' }] },
    };
    await serve(v1, '"1"');
    const provider = fakeProvider(fake, { flagClientSecret: secret, encryptionKey: undefined, logger: quietLogger });
    const client = await clientFor(provider);
    const seen = recordEvents(client, [ProviderEvents.ConfigurationChanged]);
    assert.equal(await client.getBooleanValue('b.enabled', true, { targetingKey: 'x' }), false);
    await serve({ ...v1, b: { variants: onOff, rules: [{ variant: 'on' }] }, c: { variants: onOff } }, '"2"');
    await until('CONFIGURATION_CHANGED', () => seen.length > 0);
    assert.deepEqual(seen[0].details.flagsChanged, ['b', 'c']);
    assert.equal(await client.getBooleanValue('b.enabled', false, { targetingKey: 'x' }), true);
    assert.equal(
      (await client.getBooleanDetails('b.enabled', false, { targetingKey: 'x' })).flagMetadata.stateEtag,
      '"2"',
    );
  } finally {
    await OpenFeature.clearProviders();
    fake.stop();
  }
});

test('context values of every JS type are converted as documented, or rejected with INVALID_CONTEXT', async () => {
  const rule = (name, when) => ({ [name]: { variants: onOff, rules: [{ when, variant: 'on' }, { variant: 'off' }] } });
  const client = await clientFor(
    createTestProvider({
      flags: {
        ...rule('signup', { attribute: 'signup', after: '2026-01-01T00:00:00Z' }),
        ...rule('adult', { attribute: 'age', gte: 18 }),
        ...rule('nested', { attribute: 'user.tier', equals: 'gold' }),
        ...rule('listed', { attribute: 'tags', in: ['beta'] }),
        ...rule('nulled', { not: { attribute: 'plan', equals: 'free' } }),
      },
    }),
  );
  const on = async (flag, ctx) => {
    const d = await client.getBooleanDetails(`${flag}.enabled`, false, { targetingKey: 'u', ...ctx });
    assert.equal(d.errorCode, undefined, `${flag}: ${d.errorMessage}`);
    return d.value;
  };
  assert.equal(
    await on('signup', { signup: new Date('2026-03-01T10:00:00Z') }),
    true,
    'Date → ISO string → timestamp rule',
  );
  assert.equal(await on('signup', { signup: new Date('2025-03-01T10:00:00Z') }), false);
  assert.equal(await on('adult', { age: 30n }), true, 'safe bigint → number');
  assert.equal(await on('adult', { age: 12 }), false);
  assert.equal(
    await on('nested', { user: { tier: 'gold', since: undefined } }),
    true,
    'nested objects; undefined left out',
  );
  assert.equal(await on('listed', { tags: ['alpha', 'beta'] }), true, 'arrays → lists');
  assert.equal(await on('nulled', { plan: null }), true, 'null is sent as null');

  for (const [ctx, message] of [
    [{ age: Number.NaN }, /age: NaN/],
    [{ age: 2n ** 64n }, /age: bigint/],
    [{ when: new Date('nope') }, /when: invalid Date/],
    [{ f: () => 1 }, /f: a function/],
    [{ s: new Set([1]) }, /s: Set/],
    [{ deep: { list: [1, Number.POSITIVE_INFINITY] } }, /deep\.list\[1\]: Infinity/],
  ]) {
    const d = await client.getBooleanDetails('adult.enabled', false, { targetingKey: 'u', ...ctx });
    assert.equal(d.errorCode, ErrorCode.INVALID_CONTEXT, JSON.stringify(Object.keys(ctx)));
    assert.match(d.errorMessage, message);
  }
});

test("the direct synchronous API gives the OpenFeature client's details and logs exposures the same way", async () => {
  const provider = createTestProvider({
    flags: {
      rollout: { variants: onOff, rules: [{ split: { on: 1, off: 1 } }] },
      copy: {
        variants: { a: { text: 'A', n: 1 } },
        rules: [{ when: { attribute: 'country', equals: 'SE' }, variant: 'a' }],
      },
    },
  });
  const client = await clientFor(provider);
  await takeExposures(provider);
  const calls = [
    ['evaluateBoolean', 'getBooleanDetails', 'rollout.enabled', false, { targetingKey: 'k1' }],
    ['evaluateBoolean', 'getBooleanDetails', 'rollout.enabled', false, { targetingKey: 'k2' }],
    ['evaluateString', 'getStringDetails', 'copy.text', 'x', { targetingKey: 'k3', country: 'SE' }],
    ['evaluateString', 'getStringDetails', 'copy.text', 'x', { targetingKey: 'k4', country: 'US' }],
    ['evaluateNumber', 'getNumberDetails', 'copy.text', 0, { targetingKey: 'k5', country: 'SE' }],
    ['evaluateObject', 'getObjectDetails', 'copy', {}, { targetingKey: 'k6', country: 'SE' }],
    ['evaluateBoolean', 'getBooleanDetails', 'missing.enabled', true, { targetingKey: 'k7' }],
  ];
  for (const [direct, sdk, key, fallback, ctx] of calls) {
    const ours = provider[direct](key, fallback, ctx);
    const theirs = await client[sdk](key, fallback, ctx);
    assert.deepEqual(ours, { ...theirs }, `${direct}(${key})`);
  }
  const exposures = await takeExposures(provider);
  const count = (k) => exposures.filter((e) => e.targetingKey === k).length;
  assert.deepEqual(
    ['k1', 'k2', 'k3', 'k5', 'k6'].map(count),
    [2, 2, 2, 2, 2],
    'one exposure per evaluation on both paths',
  );
});
