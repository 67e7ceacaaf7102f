// Calls written for Confidence's official Node provider, with only the import changed: the
// boolean `apply` of `resolve`, `getPrometheusMetrics()`, and the `./node` entry.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { createTestProvider, takeExposures } from 'confidence-openfeature-provider/testing';

const description = { flags: { 'my-flag': { variants: { on: { enabled: true } }, rules: [{ variant: 'on' }] } } };

test('resolve(context, flags, true) logs the exposures, as the official signature means', async () => {
  const provider = createTestProvider(description);
  await provider.initialize();
  const applied = await provider.resolve({ targetingKey: 'u1' }, ['my-flag'], true);
  assert.equal(applied.flags['my-flag'].value.enabled, true);
  assert.deepEqual(
    (await takeExposures(provider)).map((e) => e.flag),
    ['my-flag'],
  );
  await provider.resolve({ targetingKey: 'u2' }, ['my-flag'], false);
  await provider.resolve({ targetingKey: 'u3' }, ['my-flag'], { apply: false });
  assert.deepEqual(await takeExposures(provider), [], 'false and { apply: false } log nothing');
  await provider.onClose();
});

test('getPrometheusMetrics() is the Prometheus text of metrics()', async () => {
  const provider = createTestProvider(description);
  await provider.initialize();
  const text = provider.getPrometheusMetrics();
  assert.match(text, /^# TYPE confidence_log_batches_enqueued_total counter$/m);
  assert.match(text, /^confidence_state_swaps_total 1$/m);
  await provider.onClose();
});

test("'./node' is the main entry under the official provider's subpath", async () => {
  const esm = await import('confidence-openfeature-provider/node');
  const main = await import('confidence-openfeature-provider');
  assert.equal(esm.ConfidenceServerProviderLocal, main.ConfidenceServerProviderLocal);
  const cjs = createRequire(import.meta.url)('confidence-openfeature-provider/node');
  assert.equal(cjs.ConfidenceServerProviderLocal, main.ConfidenceServerProviderLocal);
});
