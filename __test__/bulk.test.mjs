// Bulk resolve of every flag on a state with more flags than one resolver request may return
// (5000): all of them come back, on both engines, and applying any of them logs its exposure.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createTestProvider, takeExposures } from 'confidence-openfeature-provider/testing';

const FLAGS = 6001;
const description = () => {
  const flags = {};
  for (let i = 0; i < FLAGS; i++) flags[`flag-${i}`] = { variants: { on: { n: i } }, rules: [{ variant: 'on' }] };
  return { flags };
};

for (const engine of ['native', 'wasm']) {
  test(`resolve(context) returns all ${FLAGS} flags and applies any of them (${engine} engine)`, async () => {
    const provider = createTestProvider(description(), { engine });
    await provider.initialize();
    const bundle = await provider.resolve({ targetingKey: 'user-1' });
    assert.equal(bundle.errorCode, undefined, bundle.errorMessage);
    assert.equal(Object.keys(bundle.flags).length, FLAGS);
    assert.equal(bundle.flags['flag-6000'].value.n, 6000);
    await takeExposures(provider); // nothing was applied yet; start from an empty log
    for (const name of ['flag-0', 'flag-5999', 'flag-6000']) provider.applyFlag(bundle.resolveToken, name);
    const exposed = (await takeExposures(provider)).map((e) => e.flag).sort();
    assert.deepEqual(exposed, ['flag-0', 'flag-5999', 'flag-6000']);
    await provider.onClose();
  });
}
