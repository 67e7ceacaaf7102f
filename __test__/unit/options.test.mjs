// Provider options (js/src/options.ts): the table against the public interface and the addon's
// NativeOptions, every option's accepted and rejected values, defaults, the rules between
// options, and the native options derived from them. No addon, no server.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { nativeOptions, OPTION_SPECS, resolveOptions } from '../../dist/cjs/options.js';
import { quietLogger as logger } from '../support/provider.mjs';

const { version } = createRequire(import.meta.url)('../../package.json');
const MAX_MS = 2 ** 32 - 1;
const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const store = { readMaterializations: async () => [] };
const state = new Uint8Array([1, 2, 3]);

/** Every option set, none to its default: a test of a new option starts by adding it here. */
const FULL = {
  flagClientSecret: 'secret',
  encryptionKey: 'ab'.repeat(32),
  initializeTimeout: 1234,
  stateUpdateInterval: 2000,
  flushInterval: 3000,
  materializationStore: store,
  enableApplyDedup: true,
  disableExposureCollection: true,
  engine: 'wasm',
  wasmPath: '/opt/resolver.wasm',
  cdnBaseUrl: 'https://cdn.example',
  apiBaseUrl: 'http://127.0.0.1:8080',
  initialState: state,
  offline: true,
  disableLogUpload: true,
  requestTimeout: 4000,
  snapshotPath: '/var/cache/state.snap',
  connectTimeout: 500,
  readTimeout: 600,
  proxy: 'http://proxy.example:3128',
  caCertificates: pem,
  userAgent: 'my-service/1.4',
  staleAfter: 7000,
  logger,
};

/** The field names of `interface <name>` in a declaration file. */
function interfaceFields(file, name) {
  const text = readFileSync(new URL(file, import.meta.url), 'utf8');
  const body = text.match(new RegExp(`export interface ${name} \\{\\n([\\s\\S]*?)\\n\\}`))?.[1];
  assert.ok(body, `interface ${name} in ${file}`);
  return [...body.matchAll(/^\s+(\w+)\??: /gm)].map((m) => m[1]);
}

const nativeNames = () =>
  Object.values(OPTION_SPECS)
    .map((spec) => spec.native)
    .filter((n) => n !== null);

test('the table has one entry per ProviderOptions field, and FULL sets every one', () => {
  const table = Object.keys(OPTION_SPECS).sort();
  assert.deepEqual(table, interfaceFields('../../dist/cjs/options.d.ts', 'ProviderOptions').sort());
  assert.deepEqual(Object.keys(FULL).sort(), table);
});

test('every native name is a NativeOptions field, and every NativeOptions field but sdkVersion has an option', () => {
  const fields = interfaceFields('../../index.d.ts', 'NativeOptions');
  for (const name of nativeNames()) assert.ok(fields.includes(name), `${name} is not a NativeOptions field`);
  assert.deepEqual([...nativeNames(), 'sdkVersion'].sort(), [...fields].sort());
  assert.equal(new Set(nativeNames()).size, nativeNames().length, 'two options name the same native field');
});

test('a fully populated options object resolves to itself and maps to every native field', () => {
  const resolved = resolveOptions(FULL);
  assert.deepEqual({ ...resolved }, { ...FULL, caCertificates: [pem] });
  const native = nativeOptions(resolved);
  assert.deepEqual(
    { ...native, initialState: [...native.initialState] },
    {
      flagClientSecret: 'secret',
      encryptionKey: 'ab'.repeat(32),
      stateUpdateIntervalMs: 2000,
      flushIntervalMs: 3000,
      enableApplyDedup: true,
      disableExposureCollection: true,
      engine: 'wasm',
      wasmPath: '/opt/resolver.wasm',
      cdnBaseUrl: 'https://cdn.example',
      apiBaseUrl: 'http://127.0.0.1:8080',
      initialState: [1, 2, 3],
      offline: true,
      disableLogUpload: true,
      requestTimeoutMs: 4000,
      snapshotPath: '/var/cache/state.snap',
      connectTimeoutMs: 500,
      readTimeoutMs: 600,
      proxy: 'http://proxy.example:3128',
      caCertificates: [pem],
      userAgent: 'my-service/1.4',
      sdkVersion: version,
    },
  );
  assert.ok(Buffer.isBuffer(native.initialState), 'napi takes a Buffer');
  assert.equal(native.initialState.buffer, state.buffer, 'a view, not a copy');
});

test('defaults, and undefined for any optional option means its default', () => {
  const defaults = resolveOptions({ flagClientSecret: 's' });
  const { logger: defaultLogger, ...rest } = defaults;
  assert.deepEqual(rest, {
    flagClientSecret: 's',
    encryptionKey: undefined,
    initializeTimeout: 30_000,
    stateUpdateInterval: 30_000,
    flushInterval: 10_000,
    materializationStore: undefined,
    enableApplyDedup: false,
    disableExposureCollection: false,
    engine: 'native',
    wasmPath: undefined,
    cdnBaseUrl: undefined,
    apiBaseUrl: undefined,
    initialState: undefined,
    offline: false,
    disableLogUpload: false,
    requestTimeout: undefined,
    snapshotPath: undefined,
    connectTimeout: undefined,
    readTimeout: undefined,
    proxy: undefined,
    caCertificates: undefined,
    userAgent: undefined,
    staleAfter: 150_000,
  });
  for (const method of ['error', 'warn', 'info', 'debug']) assert.equal(typeof defaultLogger[method], 'function');
  const allUndefined = Object.fromEntries(Object.keys(FULL).map((k) => [k, undefined]));
  const explicit = resolveOptions({ ...allUndefined, flagClientSecret: 's' });
  assert.deepEqual({ ...explicit }, { ...defaults });
  const native = nativeOptions(defaults);
  assert.deepEqual(
    [native.engine, native.wasmPath, native.stateUpdateIntervalMs, native.flushIntervalMs, native.sdkVersion],
    ['native', undefined, 30_000, 10_000, version],
  );
});

test('staleAfter defaults to 5 × stateUpdateInterval', () => {
  assert.equal(resolveOptions({ flagClientSecret: 's', stateUpdateInterval: 2000 }).staleAfter, 10_000);
  assert.equal(resolveOptions({ flagClientSecret: 's', stateUpdateInterval: 2000, staleAfter: 1 }).staleAfter, 1);
});

test("engine and wasmPath: wasmPath implies 'wasm', 'wasm' alone runs the addon's own guest, 'native' refuses wasmPath", () => {
  const implied = resolveOptions({ flagClientSecret: 's', wasmPath: '/x.wasm' });
  assert.deepEqual([implied.engine, nativeOptions(implied).wasmPath], ['wasm', '/x.wasm']);
  const bundled = nativeOptions(resolveOptions({ flagClientSecret: 's', engine: 'wasm' }));
  assert.deepEqual([bundled.engine, bundled.wasmPath], ['wasm', undefined], 'no path: the guest built into the addon');
  assert.equal(nativeOptions(resolveOptions({ flagClientSecret: 's', engine: 'native' })).wasmPath, undefined);
  assert.throws(
    () => resolveOptions({ flagClientSecret: 's', engine: 'native', wasmPath: '/x.wasm' }),
    (e) =>
      e instanceof TypeError &&
      e.message === "wasmPath runs a resolver module: it needs engine: 'wasm' (or no engine option)",
  );
});

test('offline needs an initialState', () => {
  assert.throws(
    () => resolveOptions({ flagClientSecret: 's', offline: true }),
    (e) => e instanceof RangeError && e.message === 'offline: true needs an initialState to resolve from',
  );
  assert.equal(resolveOptions({ flagClientSecret: 's', offline: true, initialState: state }).offline, true);
});

test('what is not an options object, an unknown option (with a hint for fetch) and a missing secret', () => {
  for (const input of [undefined, null, 'secret', 42]) {
    assert.throws(
      () => resolveOptions(input),
      (e) =>
        e instanceof TypeError &&
        e.message === 'ConfidenceServerProviderLocal needs an options object with flagClientSecret',
    );
  }
  const known =
    'flagClientSecret, encryptionKey, initializeTimeout, stateUpdateInterval, flushInterval, materializationStore, ' +
    'enableApplyDedup, disableExposureCollection, engine, wasmPath, cdnBaseUrl, apiBaseUrl, initialState, offline, ' +
    'disableLogUpload, requestTimeout, snapshotPath, connectTimeout, readTimeout, proxy, caCertificates, userAgent, ' +
    'staleAfter, logger';
  assert.throws(
    () => resolveOptions({ flagClientSecret: 's', stateUpdateIntervall: 1000 }),
    (e) => e instanceof TypeError && e.message === `unknown option "stateUpdateIntervall"; known: ${known}`,
  );
  assert.throws(
    () => resolveOptions({ flagClientSecret: 's', fetch: globalThis.fetch }),
    (e) =>
      e instanceof TypeError &&
      e.message ===
        `unknown option "fetch" (the native addon does its own HTTP: use cdnBaseUrl/apiBaseUrl); known: ${known}`,
  );
  for (const input of [{}, { flagClientSecret: undefined }]) {
    assert.throws(
      () => resolveOptions(input),
      (e) => e instanceof TypeError && e.message === 'flagClientSecret is required',
    );
  }
});

const ms = (name, min) => ({
  accept: [min, MAX_MS],
  reject: [
    [min - 1, RangeError, `${name} must be between ${min} and ${MAX_MS} ms, got ${min - 1}`],
    [MAX_MS + 1, RangeError, `${name} must be between ${min} and ${MAX_MS} ms, got ${MAX_MS + 1}`],
    [1.5, TypeError, `${name} must be an integer number of milliseconds, got number 1.5`],
    ['5000', TypeError, `${name} must be an integer number of milliseconds, got "5000"`],
    [null, TypeError, `${name} must be an integer number of milliseconds, got null`],
  ],
});
const bool = (name) => ({
  accept: [true, false],
  reject: [
    ['yes', TypeError, `${name} must be a boolean, got "yes"`],
    [1, TypeError, `${name} must be a boolean, got number 1`],
  ],
});
const text = (name) => ({
  accept: ['x'],
  reject: [
    ['', TypeError, `${name} must be a non-empty string, got ""`],
    [7, TypeError, `${name} must be a non-empty string, got number 7`],
    [['x'], TypeError, `${name} must be a non-empty string, got an array`],
  ],
});
const httpUrl = (name) => ({
  accept: [
    'https://confidence.example/base',
    'http://localhost:8080',
    'http://127.0.0.1:1',
    'http://127.1.2.3',
    'http://[::1]:9',
  ],
  reject: [
    [
      'http://example.com',
      TypeError,
      `${name}: plain http is only allowed to loopback addresses, got "http://example.com"`,
    ],
    [
      'http://127.0.0.1.example.com',
      TypeError,
      `${name}: plain http is only allowed to loopback addresses, got "http://127.0.0.1.example.com"`,
    ],
    ['ftp://localhost', TypeError, `${name} must be an http(s) URL, got "ftp://localhost"`],
    ['not a url', TypeError, `${name} must be an absolute http(s) URL, got "not a url"`],
    ['', TypeError, `${name} must be a non-empty string, got ""`],
  ],
});

/** An accepted value the provider keeps in another form. */
const becomes = (given, resolved) => ({ becomes: true, given, resolved });

/** Every option: values accepted (kept as they are, or `becomes`), values refused with their error. */
const VALUES = {
  flagClientSecret: {
    accept: ['s'],
    reject: [
      ['', TypeError, 'flagClientSecret must be a non-empty string, got ""'],
      [null, TypeError, 'flagClientSecret must be a non-empty string, got null'],
    ],
  },
  encryptionKey: {
    accept: ['0123456789abcdefABCDEF'.padEnd(64, '0'), becomes(` ${'f'.repeat(64)}\n`, 'f'.repeat(64))],
    reject: [
      ['abc', TypeError, 'encryptionKey must be 64 hex characters (an AES-256 key)'],
      ['g'.repeat(64), TypeError, 'encryptionKey must be 64 hex characters (an AES-256 key)'],
      ['', TypeError, 'encryptionKey must be a non-empty string, got ""'],
    ],
  },
  initializeTimeout: ms('initializeTimeout', 1),
  stateUpdateInterval: ms('stateUpdateInterval', 1000),
  flushInterval: ms('flushInterval', 1000),
  materializationStore: {
    accept: ['CONFIDENCE_REMOTE_STORE', store],
    reject: ['other', {}, null, { readMaterializations: 'no' }].map((v) => [
      v,
      TypeError,
      "materializationStore must be 'CONFIDENCE_REMOTE_STORE' or an object with a readMaterializations(ops) method",
    ]),
  },
  enableApplyDedup: bool('enableApplyDedup'),
  disableExposureCollection: bool('disableExposureCollection'),
  engine: {
    accept: ['native', 'wasm'],
    reject: [
      ['v8', TypeError, `engine must be 'native' or 'wasm', got "v8"`],
      [null, TypeError, `engine must be 'native' or 'wasm', got null`],
    ],
  },
  wasmPath: text('wasmPath'),
  cdnBaseUrl: httpUrl('cdnBaseUrl'),
  apiBaseUrl: httpUrl('apiBaseUrl'),
  initialState: {
    accept: [state, Buffer.from('ab')],
    reject: [
      ['bytes', TypeError, 'initialState must be a Buffer or Uint8Array, got "bytes"'],
      [[1, 2], TypeError, 'initialState must be a Buffer or Uint8Array, got an array'],
      [new ArrayBuffer(2), TypeError, 'initialState must be a Buffer or Uint8Array, got an object'],
    ],
  },
  offline: bool('offline'),
  disableLogUpload: bool('disableLogUpload'),
  requestTimeout: ms('requestTimeout', 1),
  snapshotPath: text('snapshotPath'),
  connectTimeout: ms('connectTimeout', 1),
  readTimeout: ms('readTimeout', 1),
  proxy: text('proxy'),
  caCertificates: {
    accept: [
      becomes(pem, [pem]),
      becomes(Buffer.from(pem), [pem]),
      becomes([pem, new TextEncoder().encode(pem)], [pem, pem]),
      becomes([], []),
    ],
    reject: [
      ['not pem', TypeError, 'caCertificates[0] must be PEM text (-----BEGIN CERTIFICATE-----), got "not pem"'],
      [[pem, 5], TypeError, 'caCertificates[1] must be PEM text (-----BEGIN CERTIFICATE-----), got number 5'],
    ],
  },
  userAgent: text('userAgent'),
  staleAfter: ms('staleAfter', 1),
  logger: {
    accept: [logger],
    reject: [console.log, { error() {}, warn() {} }, null].map((v) => [
      v,
      TypeError,
      'logger must have error, warn, info and debug methods',
    ]),
  },
};

test('every option accepts its values and refuses others with a TypeError or RangeError naming it', () => {
  assert.deepEqual(Object.keys(VALUES).sort(), Object.keys(FULL).sort(), 'every option has cases');
  // The rules between options hold for the base, so each case exercises one option alone.
  const base = { flagClientSecret: 's', initialState: state, engine: 'wasm' };
  for (const [name, { accept, reject }] of Object.entries(VALUES)) {
    for (const value of accept) {
      const { given, resolved } = value?.becomes ? value : { given: value, resolved: value };
      assert.deepEqual(resolveOptions({ ...base, [name]: given })[name], resolved, `${name}: ${String(given)}`);
    }
    for (const [value, type, message] of reject) {
      assert.throws(
        () => resolveOptions({ ...base, [name]: value }),
        (e) => e instanceof type && e.message === message,
        `${name}: ${String(value)} should fail with ${message}`,
      );
    }
  }
});

test('long strings are cut in error messages', () => {
  assert.throws(
    () => resolveOptions({ flagClientSecret: 's', engine: 'x'.repeat(50) }),
    (e) => e.message === `engine must be 'native' or 'wasm', got "${'x'.repeat(40)}…"`,
  );
});
