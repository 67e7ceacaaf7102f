// `materializationStore: 'CONFIDENCE_REMOTE_STORE'` through the OpenFeature SDK against the
// loopback fake Confidence: a sticky assignment is written to the remote store and served from
// it, and a failing store turns the evaluation into its default with GENERAL, without hanging.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ErrorCode, OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { buildTestState } from 'confidence-openfeature-provider/testing';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { clientFor, fakeProvider, quietLogger } from './support/provider.mjs';
import { until } from './support/wait.mjs';

const secret = 'remote-store-secret';
let fake;
let client;
let provider;
before(async () => {
  fake = await startFakeConfidence();
  const state = buildTestState({
    clientSecret: secret,
    flags: {
      experiment: {
        variants: { control: { color: 'gray' }, treatment: { color: 'green' } },
        rules: [{ split: { control: 1, treatment: 1 }, sticky: 'experiment-assignments' }],
      },
    },
  });
  await fake.setStateBytes(secret, state, '"r1"');
  provider = fakeProvider(fake, {
    flagClientSecret: secret,
    encryptionKey: undefined,
    materializationStore: 'CONFIDENCE_REMOTE_STORE',
    logger: quietLogger,
    // Requests may hang for 10 minutes: only the store's own bound ends a slow read.
    requestTimeout: 600_000,
  });
  client = await clientFor(provider);
});
after(async () => {
  await OpenFeature.close();
  fake.stop();
});

const variants = async () => (await fake.control({ cmd: 'store_variants' })).variants;

test('a sticky assignment is written to the remote store and served from it', async () => {
  const first = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.equal(first.errorCode, undefined, first.errorMessage);
  await until('the assignment reaches the store', async () => (await variants()).length === 1);
  const [[materialization, unit, rule, variant]] = await variants();
  assert.deepEqual([materialization, unit, variant], ['experiment-assignments', 'user-1', first.variant]);

  // What the store holds wins over bucketing: overwrite it with the other variant.
  const other = variant.endsWith('/control') ? 'treatment' : 'control';
  await provider.store.writeMaterializations([
    { op: 'variant', unit, materialization, rule, variant: `flags/experiment/variants/${other}` },
  ]);
  const again = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-1' });
  assert.equal(again.variant, `flags/experiment/variants/${other}`);
  assert.equal((await fake.counters()).store.faults_injected, 0);
});

// Bounded time: a read answering in 10 minutes (or retried without end) would outlast the test's bound.
test('a failing remote store yields the default with GENERAL, in bounded time', { timeout: 30_000 }, async () => {
  for (const fault of [{ type: 'status', code: 503 }, { type: 'slow', ms: 600_000 }, 'reset', 'garbage']) {
    await fake.setFault('store', fault);
    const d = await client.getStringDetails('experiment.color', 'none', { targetingKey: `user-${Date.now()}` });
    assert.deepEqual([d.value, d.errorCode], ['none', ErrorCode.GENERAL], JSON.stringify(fault));
    assert.match(d.errorMessage, /materialization store read failed: Confidence remote store/);
    assert.ok(!d.errorMessage.includes(secret));
  }
  await fake.setFault('store', 'none');
  const healthy = await client.getStringDetails('experiment.color', 'none', { targetingKey: 'user-2' });
  assert.equal(healthy.errorCode, undefined, healthy.errorMessage);
});

test('an offline provider cannot reach the remote store and says so', async () => {
  const offline = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    offline: true,
    initialState: buildTestState({
      clientSecret: secret,
      flags: { experiment: { variants: { a: { x: 1 } }, rules: [{ variant: 'a', sticky: 'm' }] } },
    }),
    materializationStore: 'CONFIDENCE_REMOTE_STORE',
  });
  const c = await clientFor(offline);
  const d = await c.getNumberDetails('experiment.x', 0, { targetingKey: 'u' });
  assert.deepEqual([d.value, d.errorCode], [0, ErrorCode.GENERAL]);
  assert.match(d.errorMessage, /offline/);
});
