// Shared setup for the suites that run the provider (or the native class) against the loopback
// fake Confidence: one way to build each, and helpers to drive them and read what they sent.
import { createRequire } from 'node:module';

import { OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';

import { encryptionKey, secret } from './fixtures.mjs';

/** A logger that drops everything, for suites that provoke warnings on purpose. */
export const quietLogger = { error() {}, warn() {}, info() {}, debug() {} };

/**
 * A provider for the fixture client (encrypted state) on `fake`, polling and flushing every
 * second; `extra` overrides any option (`encryptionKey: undefined` for unencrypted states).
 */
export const fakeProvider = (fake, extra = {}) =>
  new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    encryptionKey,
    cdnBaseUrl: fake.baseUrl,
    apiBaseUrl: fake.baseUrl,
    stateUpdateInterval: 1000,
    flushInterval: 1000,
    initializeTimeout: 5000,
    ...extra,
  });

/** The same for the native class: `NativeOptions` for the fixture client on `fake`. */
export const fakeNativeOptions = (fake, extra = {}) => ({
  flagClientSecret: secret,
  encryptionKey,
  cdnBaseUrl: fake.baseUrl,
  apiBaseUrl: fake.baseUrl,
  stateUpdateIntervalMs: 200,
  flushIntervalMs: 200,
  ...extra,
});

let domains = 0;

/** Registers `provider` under a fresh domain and returns that domain's client. */
export async function clientFor(provider, { wait = true } = {}) {
  const domain = `test-${++domains}`;
  if (wait) await OpenFeature.setProviderAndWait(domain, provider);
  else OpenFeature.setProvider(domain, provider);
  return OpenFeature.getClient(domain);
}

/** Collects the events `client` sees, in order. */
export function recordEvents(client, events) {
  const seen = [];
  for (const event of events) client.addHandler(event, (details) => seen.push({ event, details }));
  return seen;
}

/** A counter or gauge of the host from the Prometheus text of a provider or a native resolver. */
export const metric = (source, name) => Number(source.metrics().match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1]);

/**
 * Every `FlagAssigned` (exposures: `resolveId`, `flags[].flag`, `flags[].targetingKey`, …) in the
 * uploads the fake accepted, decoded by the addon's `decodeFlagLogs`, in the order they arrived.
 */
export function flagAssigned(logs) {
  const { decodeFlagLogs } = createRequire(import.meta.url)('confidence-openfeature-provider/native');
  return logs.flatMap((log) => JSON.parse(decodeFlagLogs(Buffer.from(log.body, 'base64'))).flagAssigned);
}
