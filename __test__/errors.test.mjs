// The native error boundary: every code src/errors.rs can put on `err.code` is the README's and
// the provider's, and each reachable one arrives on a real error, thrown or rejected.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { encryptedState, encryptionKey, secret } from './support/fixtures.mjs';

const require = createRequire(import.meta.url);
const { NativeResolver, buildTestState, decodeFlagLogs } = require('../index.js');
const { NATIVE_ERROR_CODES } = require('../dist/cjs/native.js');
const root = fileURLToPath(new URL('..', import.meta.url));

/** A loopback port nobody listens on (bound, then closed). */
async function closedPort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

const offline = (extra = {}) => ({
  flagClientSecret: secret,
  encryptionKey,
  offline: true,
  initialState: readFileSync(encryptedState),
  ...extra,
});

/** Asserts `e` is an Error with `code` and a message matching `message`. */
const coded = (code, message) => (e) => {
  assert.ok(e instanceof Error, `an Error, got ${e}`);
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
  return true;
};

test('the codes of src/errors.rs, the README table and the provider are one list', () => {
  const rust = readFileSync(join(root, 'src', 'errors.rs'), 'utf8');
  const fromRust = [...rust.matchAll(/Code::\w+ => "([A-Z_]+)"/g)].map((m) => m[1]);
  assert.deepEqual([...fromRust].sort(), [...NATIVE_ERROR_CODES].sort());
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Native error codes'));
  const fromReadme = [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual([...fromReadme].sort(), [...NATIVE_ERROR_CODES].sort());
});

test('constructor errors carry INVALID_OPTION or INVALID_MODULE and name the option', () => {
  assert.throws(
    () => new NativeResolver(offline({ encryptionKey: 'xyz' })),
    coded('INVALID_OPTION', /^encryptionKey: /),
  );
  assert.throws(
    () => new NativeResolver(offline({ engine: 'native', wasmPath: '/nonexistent.wasm' })),
    coded('INVALID_OPTION', /^wasmPath: /),
  );
  assert.throws(() => new NativeResolver(offline({ engine: 'quantum' })), coded('INVALID_OPTION', /^engine: /));
  assert.throws(
    () => new NativeResolver(offline({ cdnBaseUrl: 'http://cdn.example/' })),
    coded('INVALID_OPTION', /^cdnBaseUrl: /),
  );
  assert.throws(
    () => new NativeResolver(offline({ initialState: Buffer.from('not a state') })),
    coded('INVALID_OPTION', /^initialState: /),
  );
  assert.throws(
    () => new NativeResolver(offline({ flagClientSecret: 'not-the-fixture-secret' })),
    coded('INVALID_OPTION', /^initialState: .*no credential for this client secret/),
  );
  const dir = mkdtempSync(join(tmpdir(), 'confidence-errors-'));
  try {
    const notWasm = join(dir, 'x.wasm');
    writeFileSync(notWasm, 'not wasm');
    assert.throws(() => new NativeResolver(offline({ wasmPath: notWasm })), coded('INVALID_MODULE', /^wasmPath: /));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('evaluation errors: INVALID_CONTEXT, NOT_READY and RESOLVER_ERROR, thrown synchronously', async () => {
  const r = new NativeResolver(offline());
  assert.throws(() => r.evaluate('flags/tutorial-feature', '{"a": ', false), coded('INVALID_CONTEXT'));
  // A state without the secret's credential never loads (INVALID_OPTION at construction), so the
  // resolver's own refusal comes from a numeric condition meeting a string, which fails the resolve.
  const numeric = buildTestState(
    JSON.stringify({
      flags: { n: { variants: { on: { x: true } }, rules: [{ variant: 'on', when: { attribute: 'age', gt: 3 } }] } },
    }),
  );
  const failing = new NativeResolver({ flagClientSecret: 'test-client-secret', offline: true, initialState: numeric });
  assert.throws(() => failing.evaluate('flags/n', '{"age": "old"}', false), coded('RESOLVER_ERROR'));
  const empty = new NativeResolver({ flagClientSecret: secret, cdnBaseUrl: `http://127.0.0.1:${await closedPort()}/` });
  assert.throws(() => empty.evaluate('flags/tutorial-feature', '{}', false), coded('NOT_READY'));
  await Promise.all([r.close(1000), failing.close(1000), empty.close(1000)]);
});

test('rejections keep their codes: NOT_READY, UPLOAD_FAILED and STORE_FAILED', async () => {
  const port = await closedPort();
  const unreachable = new NativeResolver({ flagClientSecret: secret, cdnBaseUrl: `http://127.0.0.1:${port}/` });
  await assert.rejects(unreachable.initialize(300), coded('NOT_READY'));
  await unreachable.close(1000);

  const r = new NativeResolver({
    ...offline({ offline: false }),
    cdnBaseUrl: `http://127.0.0.1:${port}/`,
    apiBaseUrl: `http://127.0.0.1:${port}/`,
    requestTimeoutMs: 200,
  });
  r.evaluate('flags/tutorial-feature', JSON.stringify({ visitor_id: 'tutorial_visitor' }), true);
  await assert.rejects(r.flush(), coded('UPLOAD_FAILED'));
  await r.close(500).catch(() => {});

  const o = new NativeResolver(offline());
  await assert.rejects(o.readRemoteMaterializations([]), coded('STORE_FAILED', /offline/));
  await o.close(1000);
});

test('test-kit inputs that are not valid carry INVALID_OPTION', () => {
  assert.throws(() => buildTestState('{"flags": 1}'), coded('INVALID_OPTION', /^flags: /));
  assert.throws(
    () => decodeFlagLogs(Buffer.from([0x0a, 0xff, 0xff])),
    coded('INVALID_OPTION', /^not a flag log batch: /),
  );
});
