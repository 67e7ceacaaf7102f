// `npm run test:e2e`: the provider against Confidence's real CDN and log endpoints. Needs
// CONFIDENCE_CLIENT_SECRET (a flag client secret of your account; optional
// CONFIDENCE_ENCRYPTION_KEY and CONFIDENCE_E2E_FLAG, a flag key to evaluate). Skipped with a
// message otherwise; never part of `npm test`, which sends nothing beyond 127.0.0.1.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { OpenFeature, ProviderStatus } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';

const secret = process.env.CONFIDENCE_CLIENT_SECRET;

test('initializes from Confidence, resolves every flag of the client and delivers its logs', {
  timeout: 60_000,
}, async (t) => {
  if (!secret) {
    t.skip('CONFIDENCE_CLIENT_SECRET is not set: skipping the end-to-end test against Confidence');
    return;
  }
  const provider = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    encryptionKey: process.env.CONFIDENCE_ENCRYPTION_KEY,
    initializeTimeout: 20_000,
  });
  await OpenFeature.setProviderAndWait('e2e', provider);
  const client = OpenFeature.getClient('e2e');
  assert.equal(client.providerStatus, ProviderStatus.READY);

  const bundle = await provider.resolve({ targetingKey: 'e2e-user' });
  assert.equal(bundle.errorCode, undefined, bundle.errorMessage);
  t.diagnostic(`the client resolves ${Object.keys(bundle.flags).length} flags`);

  const flagKey = process.env.CONFIDENCE_E2E_FLAG ?? Object.keys(bundle.flags)[0];
  if (flagKey) {
    const details = await client.getObjectDetails(flagKey, {}, { targetingKey: 'e2e-user' });
    assert.notEqual(details.errorCode, 'PROVIDER_NOT_READY');
    assert.notEqual(details.errorCode, 'GENERAL', details.errorMessage);
    t.diagnostic(`${flagKey}: ${details.reason} ${details.variant ?? ''}`);
  }
  await provider.flush();
  assert.match(provider.metrics(), /^confidence_log_batches_sent_total [1-9]/m);
  await OpenFeature.close();
});
