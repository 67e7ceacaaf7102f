// Shared setup for the provider suites: the fixture state served by the loopback fake
// Confidence, and helpers to drive a provider through the real OpenFeature SDK.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { OpenFeature } from '@openfeature/server-sdk';

export const fixtures = fileURLToPath(new URL('../../fixtures/', import.meta.url));
export const encryptedState = `${fixtures}resolver_state_encrypted.pb`;
export const plainState = `${fixtures}resolver_state_current.pb`;
export const encryptionKey = readFileSync(`${fixtures}encryption_key_test.hex`, 'utf8').trim();
export const secret = 'mkjJruAATQWjeY7foFIWfVAcBWnci2YF';

/**
 * Confidence's released resolver for the differential suites: its path, or the reason a suite
 * skips. With `CONFIDENCE_REQUIRE_OFFICIAL` set (CI, once the binary was fetched) a missing
 * binary is a failure, not a skip.
 */
export function officialWasm() {
  const path = process.env.CONFIDENCE_OFFICIAL_WASM;
  if (path) return { path, skip: false };
  if (process.env.CONFIDENCE_REQUIRE_OFFICIAL) {
    throw new Error('CONFIDENCE_REQUIRE_OFFICIAL is set but CONFIDENCE_OFFICIAL_WASM is not');
  }
  return { path: undefined, skip: 'CONFIDENCE_OFFICIAL_WASM is not set (node scripts/fetch-official-wasm.mjs)' };
}

let domains = 0;

/** Registers `provider` under a fresh domain and returns that domain's client. */
export async function clientFor(provider, { wait = true } = {}) {
  const domain = `test-${++domains}`;
  if (wait) await OpenFeature.setProviderAndWait(domain, provider);
  else OpenFeature.setProvider(domain, provider);
  return OpenFeature.getClient(domain);
}

/** Resolves when `cond()` holds; fails with `what` after `ms`. */
export async function until(what, cond, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Collects the events `client` sees, in order. */
export function recordEvents(client, events) {
  const seen = [];
  for (const event of events) client.addHandler(event, (details) => seen.push({ event, details }));
  return seen;
}

/** The oracle's account: it salts the buckets, so the recorded answers hold only with it. */
export const oracleAccount = readFileSync(`${fixtures}account_id`, 'utf8').trim();

/** `ClientResolverState{state = 1, account = 2}` around the plain fixture: a CDN body. */
export function plainStateBody(account = oracleAccount) {
  const field = (tag, bytes) => {
    const len = [];
    let n = bytes.length;
    do {
      len.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
      n >>>= 7;
    } while (n > 0);
    return Buffer.concat([Buffer.from([tag, ...len]), bytes]);
  };
  return Buffer.concat([field(0x0a, readFileSync(plainState)), field(0x12, Buffer.from(account))]);
}
