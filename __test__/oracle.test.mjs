// The fixture's oracle (3000 requests answered by Confidence's released resolver) replayed
// through the OpenFeature client: every flag a request names that is expressible as a flag key,
// and every flag of the client for requests naming none, must give the recorded value, variant,
// reason and shouldApply; absent flags FLAG_NOT_FOUND; other errors GENERAL. A secret the state
// holds no credential for (Confidence answers "client secret not found") is refused at construction.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';

import { oracleCases, plainStateBody } from './support/fixtures.mjs';
import { clientFor } from './support/provider.mjs';

const cases = oracleCases();

for (const engine of ['native', 'wasm']) {
  test(`the oracle cases through OpenFeature give the recorded answers (${engine} engine)`, () => replay(engine));
}

async function replay(engine) {
  const initialState = plainStateBody();
  const clients = new Map();
  // A secret the state holds no credential for cannot be configured with it (`null`): where the
  // released resolver answers "client secret not found", this provider refuses at construction.
  const clientOf = async (secret) => {
    if (!clients.has(secret)) {
      let provider = null;
      try {
        provider = new ConfidenceServerProviderLocal({ flagClientSecret: secret, initialState, offline: true, engine });
      } catch (e) {
        if (!/no credential for this client secret/.test(e.message)) throw e;
      }
      clients.set(secret, provider && (await clientFor(provider)));
    }
    return clients.get(secret);
  };
  let checked = 0;
  for (const c of cases) {
    const { clientSecret, flags, evaluationContext, apply } = c.request;
    if (!clientSecret) continue; // the provider requires a secret
    const client = await clientOf(clientSecret);
    const context = { ...evaluationContext, _confidence_skip_apply: !apply };
    const names = flags.length > 0 ? flags : (c.resolvedFlags ?? []).map((f) => f.flag);
    for (const name of names) {
      const key = /^flags\/([^/.]+)$/.exec(name)?.[1];
      if (!key) continue; // not expressible as an OpenFeature flag key
      const where = `${c.id} ${key}`;
      checked++;
      if (client === null) {
        assert.match(c.error ?? '', /^client secret not found/, `${where}: refused at construction`);
        continue;
      }
      const d = await client.getObjectDetails(key, {}, context);
      if (c.error) {
        assert.equal(d.errorCode, ErrorCode.GENERAL, where);
        assert.ok(d.errorMessage.includes(c.error.split(':')[0]), `${where}: ${d.errorMessage}`);
        continue;
      }
      const expected = c.resolvedFlags.find((f) => f.flag === name);
      if (!expected) {
        assert.equal(d.errorCode, ErrorCode.FLAG_NOT_FOUND, where);
        continue;
      }
      const reason = expected.reason.replace('RESOLVE_REASON_', '');
      if (reason === 'TARGETING_KEY_ERROR') {
        assert.deepEqual([d.errorCode, d.value], [ErrorCode.TARGETING_KEY_MISSING, {}], where);
        assert.equal(d.flagMetadata.confidenceReason, reason, where);
        continue;
      }
      assert.equal(d.errorCode, undefined, `${where}: ${d.errorMessage}`);
      assert.deepEqual(d.value, expected.value ?? {}, where);
      assert.equal(d.variant, expected.variant, where);
      assert.equal(d.flagMetadata.confidenceReason, reason, where);
      assert.equal(d.flagMetadata.shouldApply, expected.shouldApply, where);
    }
  }
  assert.ok(checked > 3000, `only ${checked} evaluations were checked`);
  await OpenFeature.clearProviders();
}
