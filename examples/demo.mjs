#!/usr/bin/env node
// `npm run demo`: the provider resolving the project's demo state (built by crates/state-builder,
// shipped inside the addon) through the OpenFeature SDK: offline, no account, no network.
// With CONFIDENCE_FLAG_CLIENT_SECRET set it resolves your own flags from Confidence instead
// (pass flag keys as arguments).
import { OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { demoState, takeExposures } from 'confidence-openfeature-provider/testing';

const secret = process.env.CONFIDENCE_FLAG_CLIENT_SECRET;
const provider = secret
  ? new ConfidenceServerProviderLocal({
      flagClientSecret: secret,
      encryptionKey: process.env.CONFIDENCE_ENCRYPTION_KEY,
    })
  : new ConfidenceServerProviderLocal({
      flagClientSecret: 'demo-client-secret',
      initialState: demoState(),
      offline: true,
    });

const started = performance.now();
await OpenFeature.setProviderAndWait(provider);
console.log(
  `provider READY in ${(performance.now() - started).toFixed(0)} ms (${secret ? 'Confidence CDN' : 'embedded demo state, offline'})\n`,
);
const client = OpenFeature.getClient();

if (secret) {
  for (const key of process.argv.slice(2)) {
    const d = await client.getObjectDetails(key, {}, { targetingKey: 'demo-user' });
    console.log(key, JSON.stringify(d.value), d.variant ?? '', d.reason, d.errorCode ?? '');
  }
} else {
  const users = [
    { targetingKey: 'user-1', country: 'SE', plan: 'free', app: { version: '2.1.0' } },
    { targetingKey: 'user-2', country: 'US', plan: 'enterprise', app: { version: '1.9.3' } },
    { targetingKey: 'user-3', country: 'DE', plan: 'free', app: { version: '2.0.0' } },
    { targetingKey: 'user-4', country: 'US', plan: 'pro' },
  ];
  const rows = [];
  for (const user of users) {
    const newUi = await client.getBooleanDetails('new-ui.enabled', false, user);
    const welcome = await client.getStringValue('welcome-message.text', 'Hello', user);
    const limit = await client.getNumberValue('max-items.limit', 5, user);
    const color = await client.getStringValue('checkout.theme.color', 'gray', user);
    const gradual = await client.getBooleanDetails('gradual-rollout.enabled', false, user);
    rows.push({
      user: user.targetingKey,
      country: user.country,
      plan: user.plan,
      'new-ui': `${newUi.value} (${newUi.variant?.split('/').pop() || '-'}, ${newUi.reason})`,
      welcome,
      'max-items': limit,
      'checkout color': color,
      'gradual-rollout': `${gradual.value} (${gradual.reason})`,
    });
  }
  console.table(rows);

  const archived = await client.getBooleanDetails('retired-experiment.enabled', false, users[0]);
  console.log(`\nretired-experiment.enabled → ${archived.value} (${archived.errorCode}: ${archived.errorMessage})`);
  const mismatch = await client.getNumberDetails('welcome-message.text', 0, users[0]);
  console.log(`welcome-message.text as a number → ${mismatch.value} (${mismatch.errorCode}: ${mismatch.errorMessage})`);

  const bundle = await provider.resolve(users[1], [], { apply: false });
  console.log(`\nbulk resolve for user-2: ${Object.keys(bundle.flags).length} flags from one state`);
  for (const [name, f] of Object.entries(bundle.flags))
    console.log(`  ${name}: ${f.reason} ${JSON.stringify(f.value)}`);

  let n = 0;
  const loopStart = performance.now();
  while (performance.now() - loopStart < 500) {
    await client.getBooleanValue('new-ui.enabled', false, { targetingKey: `load-${n++}`, country: 'US' });
  }
  const perSecond = Math.round(n / ((performance.now() - loopStart) / 1000));
  console.log(`\n${n} evaluations in 0.5 s through the OpenFeature client (~${perSecond}/s on this machine)`);
  const exposures = await takeExposures(provider);
  console.log(`exposures the provider would have sent to Confidence: ${exposures.length}`);
}

await OpenFeature.close();
