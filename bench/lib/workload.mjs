// The workloads' inputs, identical for every contender (crates/confidence-host/benches/crate_floor.rs generates the
// same contexts from the same formulas): states as CDN bodies, flags, contexts, key walks.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import { buildTestState } from 'confidence-openfeature-provider/testing';

import { encodeClientResolverState } from './proto.mjs';

export const root = fileURLToPath(new URL('../../', import.meta.url));
export const fixtures = process.env.CONFIDENCE_FIXTURES ?? fileURLToPath(new URL('../../fixtures/', import.meta.url));
export const tmpDir = `${root}bench/results/tmp/`;

export const FIXTURE_SECRET = 'mkjJruAATQWjeY7foFIWfVAcBWnci2YF';
export const FIXTURE_ACCOUNT = readFileSync(`${fixtures}account_id`, 'utf8').trim();
export const ENCRYPTION_KEY = readFileSync(`${fixtures}encryption_key_test.hex`, 'utf8').trim();
export const KIT_SECRET = 'bench-client-secret';

/** The test-kit flags: an object flag for the dot path, a flag read by the wide contexts. */
const KIT_DESCRIPTION = {
  clientSecret: KIT_SECRET,
  accountId: 'bench-account',
  flags: {
    checkout: {
      variants: {
        fast: { theme: { color: 'blue', density: 'compact', radius: 4 }, limits: { maxItems: 10 }, enabled: true },
        calm: { theme: { color: 'green', density: 'cozy', radius: 8 }, limits: { maxItems: 20 }, enabled: false },
      },
      rules: [{ when: { attribute: 'country', in: ['SE', 'NO'] }, variant: 'fast' }, { split: { fast: 50, calm: 50 } }],
    },
    'wide-context': {
      variants: { on: { enabled: true }, off: { enabled: false } },
      rules: [{ when: { attribute: 'country', in: ['NO'] }, variant: 'on' }, { split: { on: 50, off: 50 } }],
    },
  },
};

/** Writes the states every contender loads (CDN bodies) and returns their paths and bytes. */
export function prepareStates() {
  mkdirSync(tmpDir, { recursive: true });
  const plain = readFileSync(`${fixtures}resolver_state_current.pb`);
  const states = {
    // The reference state, and the same flags under another account (other buckets): the swap pair.
    fixture: encodeClientResolverState(plain, FIXTURE_ACCOUNT),
    fixtureB: encodeClientResolverState(plain, 'confidence-test'),
    kit: new Uint8Array(buildTestState(KIT_DESCRIPTION)),
    encrypted: readFileSync(`${fixtures}resolver_state_encrypted.pb`),
  };
  const files = {};
  for (const [name, bytes] of Object.entries(states)) {
    files[name] = `${tmpDir}${name}.pb`;
    writeFileSync(files[name], bytes);
  }
  return { states, files };
}

/** The i-th key of a walk over `keys` distinct keys (7919 is coprime with 10^n). */
export function keyIndex(i, keys) {
  return (i * 7919) % keys;
}

const COUNTRIES3 = ['SE', 'US', 'DE'];
const COUNTRIES4 = ['SE', 'US', 'DE', 'NO'];
const PLANS = ['free', 'pro'];

/**
 * A context factory: `(i) => context`, with OpenFeature's `targetingKey` (`confidence` = false)
 * or the resolver's `targeting_key` (`confidence` = true, what the native class takes).
 * `reference`: the six attributes; `wide`: targeting key, country and `attrs - 2`
 * attributes of mixed types.
 */
export function contextFactory({ context, attrs = 6, keys }, confidence = false) {
  const tk = confidence ? 'targeting_key' : 'targetingKey';
  if (context === 'reference') {
    return (i) => {
      const k = keyIndex(i, keys);
      const key = `user-${k}`;
      return {
        [tk]: key,
        visitor_id: key,
        country: COUNTRIES3[k % 3],
        plan: PLANS[k % 2],
        age: 18 + (k % 60),
        beta: k % 5 === 0,
      };
    };
  }
  const extra = attrs - 2;
  const names = Array.from({ length: extra }, (_, j) => `attr_${j}`);
  return (i) => {
    const k = keyIndex(i, keys);
    const ctx = { [tk]: `user-${k}`, country: COUNTRIES4[k % 4] };
    for (let j = 0; j < extra; j++) {
      const m = j % 3;
      ctx[names[j]] = m === 0 ? `s${(k + j) % 11}` : m === 1 ? (k + j) % 97 : (k + j) % 2 === 0;
    }
    return ctx;
  };
}

/** The value at `path` of a resolved flag's value object. */
export function atPath(value, path) {
  let v = value;
  for (const p of path) v = v?.[p];
  return v;
}
