// The Confidence fixtures in fixtures/ (see its NOTICE) and the states built from them. The
// one place tests read fixture files, so paths, the secret and the key are written once.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const fixtures = fileURLToPath(new URL('../../fixtures/', import.meta.url));
/** The CDN body of the fixture client's state, encrypted with `encryptionKey` (account `confidence-test`). */
export const encryptedState = `${fixtures}resolver_state_encrypted.pb`;
/** The bare `ResolverState` message (no account): wrap it with `clientResolverState`. */
export const plainState = `${fixtures}resolver_state_current.pb`;
export const encryptionKey = readFileSync(`${fixtures}encryption_key_test.hex`, 'utf8').trim();
/** The fixture state's flag client secret. */
export const secret = 'mkjJruAATQWjeY7foFIWfVAcBWnci2YF';
/** The oracle's account: it salts the buckets, so the recorded answers hold only with it. */
const oracleAccount = readFileSync(`${fixtures}account_id`, 'utf8').trim();
/** The oracle: requests answered by Confidence's released resolver, one JSON object per line. */
export const oracleCases = () =>
  readFileSync(`${fixtures}oracle/resolve_cases.jsonl`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));
/** Our resolver module, as the package ships it. */
export const ourWasm = fileURLToPath(new URL('../../wasm/confidence_resolver.wasm', import.meta.url));

const varint = (n) => {
  const out = [];
  for (; n > 0x7f; n = Math.floor(n / 0x80)) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
};
const lengthDelimited = (tag, bytes) => Buffer.concat([Buffer.from([tag]), varint(bytes.length), bytes]);

/** `ClientResolverState{state = 1, account = 2}` (docs/wire-format.md, "Resolver state"): a CDN body. */
export const clientResolverState = (state, account) =>
  Buffer.concat([lengthDelimited(0x0a, state), lengthDelimited(0x12, Buffer.from(account))]);

/** The plain fixture as the CDN serves it unencrypted, for `account` (default: the oracle's). */
export const plainStateBody = (account = oracleAccount) => clientResolverState(readFileSync(plainState), account);

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
