// Provider options: names follow Confidence's official Node provider (migrating is a change of
// import), validated once at construction so a typo fails loudly instead of at 3 a.m.
//
// OPTION_SPECS is the one description of every option: how it is checked, its default, and the
// field of the addon's NativeOptions it becomes. The known names, `resolveOptions`,
// `ResolvedOptions` and `nativeOptions` are all derived from it, so an option is added by adding
// its entry (and, for a native option, the field in the Rust struct).
import type { Logger } from '@openfeature/server-sdk';

import type { MaterializationStore } from './materialization';
import type { NativeOptions } from './native';

export interface ProviderOptions {
  /** The client secret of a Confidence flag client (required). */
  flagClientSecret: string;
  /** 64 hex characters (AES-256): fetch the encrypted copy of the state and decrypt it. */
  encryptionKey?: string | undefined;
  /** Bound on the first state load, in ms (default 30 000). */
  initializeTimeout?: number | undefined;
  /** How often the state is revalidated against the CDN, in ms (default 30 000, at least 1000). */
  stateUpdateInterval?: number | undefined;
  /** How often evaluation logs are uploaded, in ms (default 10 000, at least 1000). */
  flushInterval?: number | undefined;
  /**
   * Sticky assignments and materialized segments: a store of your own (see
   * `InMemoryMaterializationStore`), or `'CONFIDENCE_REMOTE_STORE'` for the one Confidence keeps.
   */
  materializationStore?: MaterializationStore | 'CONFIDENCE_REMOTE_STORE' | undefined;
  /** Experimental: let the resolver skip exposures it has already logged (default false). */
  enableApplyDedup?: boolean | undefined;
  /** Never log exposures (assignments); resolve logs and telemetry still flow (default false). */
  disableExposureCollection?: boolean | undefined;
  /**
   * How flags are resolved: `'native'` (default) runs Confidence's resolver crate linked into
   * the addon; `'wasm'` runs a resolver WebAssembly module in wasmtime (this package's, or
   * `wasmPath`). Both give the same answers and logs; native is several times faster.
   */
  engine?: 'native' | 'wasm' | undefined;
  /** A resolver module with Confidence's guest ABI for the wasm engine (implies `engine: 'wasm'`). */
  wasmPath?: string | undefined;
  /** Where states are fetched (default `https://confidence-resolver-state-cdn.spotifycdn.com`). */
  cdnBaseUrl?: string | undefined;
  /** Where logs are uploaded (default Confidence's production API). */
  apiBaseUrl?: string | undefined;
  /**
   * A state as the CDN serves it (encrypted when `encryptionKey` is set), or the content of a
   * `snapshotPath` file (e.g. baked into an image): ready at once.
   */
  initialState?: Uint8Array | undefined;
  /**
   * Last-known-good snapshot file. Every downloaded state is written here (atomically, still
   * encrypted when it came encrypted, with its ETag); when the CDN cannot be reached within
   * `initializeTimeout`, the provider starts from it (READY, `stateFromSnapshot` in flag
   * metadata, a warning logged) and keeps revalidating it with the CDN. A corrupt, truncated or
   * another client's file is ignored with a warning.
   */
  snapshotPath?: string | undefined;
  /** Never open a connection: resolve from `initialState` only (logs are kept, not sent). */
  offline?: boolean | undefined;
  /**
   * Zero egress for logs: fetch fresh states, but never send resolve logs, exposures or
   * telemetry (previews, CI, jobs that must not emit). Unlike `disableExposureCollection`,
   * nothing at all is uploaded. Default false.
   */
  disableLogUpload?: boolean | undefined;
  /** Bound of one HTTP request, in ms (default 10 000 for state fetches, 5000 for log uploads). */
  requestTimeout?: number | undefined;
  /** Bound on establishing a connection (TCP, proxy tunnel, TLS), in ms (default 5000). */
  connectTimeout?: number | undefined;
  /** Bound on each wait for response data, in ms (default: only `requestTimeout` applies). */
  readTimeout?: number | undefined;
  /**
   * Proxy for all of the provider's traffic, `http://[user:password@]host:port`. Without it,
   * `HTTPS_PROXY`/`HTTP_PROXY` apply to non-loopback targets; `NO_PROXY` is honoured in both cases.
   */
  proxy?: string | undefined;
  /** Extra trusted CA certificates (PEM), besides the system's and `NODE_EXTRA_CA_CERTS`. */
  caCertificates?: string | Uint8Array | Array<string | Uint8Array> | undefined;
  /** A product token sent before the package's own in `User-Agent`, e.g. `my-service/1.4`. */
  userAgent?: string | undefined;
  /** Emit PROVIDER_STALE when no fresh state arrived for this long, in ms (default 5 × stateUpdateInterval). */
  staleAfter?: number | undefined;
  /** Where the provider reports warnings (default: `console` for warn and error). */
  logger?: Logger | undefined;
}

/** Validates a value the user gave (never `undefined`): returns it as the provider keeps it. */
export type Check<T> = (value: unknown, name: string) => T;

/** How one option is checked, what it is when left out, and what the addon calls it. */
export interface OptionSpec<T> {
  check: Check<T>;
  /** Leaving it out is an error. */
  required?: true;
  /** The value when left out (no default and no `defaultFrom`: `undefined`). */
  default?: T;
  /**
   * A default that depends on other options, computed from the user's options once every one is
   * checked. (Typed as `ProviderOptions`: a type derived from the table would be circular.)
   */
  defaultFrom?(given: ProviderOptions): T;
  /** Its field in the addon's `NativeOptions`; `null` when only the TypeScript side reads it. */
  native: keyof NativeOptions | null;
  /** Its native form, when that is not the value itself; `resolved` are all the resolved options. */
  toNative?(value: T | undefined, resolved: ProviderOptions): unknown;
}

/** Native timers take unsigned 32-bit milliseconds (~49 days). */
const MAX_MS = 2 ** 32 - 1;
const DEFAULT_STATE_UPDATE_INTERVAL = 30_000;

/** Version reported to Confidence in every log batch. */
const SDK_VERSION: string = require('../../package.json').version;

const consoleLogger: Logger = {
  error: (...args) => console.error('[confidence]', ...args),
  warn: (...args) => console.warn('[confidence]', ...args),
  info: () => {},
  debug: () => {},
};

const nonEmptyString: Check<string> = (value, name) => {
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${name} must be a non-empty string, got ${describe(value)}`);
  }
  return value;
};

const booleanValue: Check<boolean> = (value, name) => {
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  return value;
};

function milliseconds(min: number): Check<number> {
  return (value, name) => {
    if (typeof value !== 'number' || !Number.isInteger(value)) {
      throw new TypeError(`${name} must be an integer number of milliseconds, got ${describe(value)}`);
    }
    if (value < min || value > MAX_MS) {
      throw new RangeError(`${name} must be between ${min} and ${MAX_MS} ms, got ${value}`);
    }
    return value;
  };
}

/** Trimmed: keys are often read from files or environment variables with a trailing newline. */
const aes256Key: Check<string> = (value, name) => {
  const key = nonEmptyString(value, name).trim();
  if (!/^[0-9a-fA-F]{64}$/.test(key)) throw new TypeError(`${name} must be 64 hex characters (an AES-256 key)`);
  return key;
};

/** https anywhere; plain http only to loopback (the fake Confidence of tests, a local proxy). */
const httpUrl: Check<string> = (value, name) => {
  const text = nonEmptyString(value, name);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new TypeError(`${name} must be an absolute http(s) URL, got ${JSON.stringify(text)}`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new TypeError(`${name} must be an http(s) URL, got ${JSON.stringify(text)}`);
  }
  // The parser writes every IPv4 form as a dotted quad; a DNS name such as 127.0.0.1.example is not loopback.
  const loopback = ['localhost', '[::1]'].includes(parsed.hostname) || /^127\.\d+\.\d+\.\d+$/.test(parsed.hostname);
  if (parsed.protocol === 'http:' && !loopback) {
    throw new TypeError(`${name}: plain http is only allowed to loopback addresses, got ${JSON.stringify(text)}`);
  }
  return text;
};

const bytes: Check<Uint8Array> = (value, name) => {
  if (!(value instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Buffer or Uint8Array, got ${describe(value)}`);
  }
  return value;
};

/** PEM text from strings or bytes, one entry per bundle. */
const pemCertificates: Check<string[]> = (value, name) => {
  const list = Array.isArray(value) ? value : [value];
  return list.map((pem, i) => {
    const text = typeof pem === 'string' ? pem : pem instanceof Uint8Array ? Buffer.from(pem).toString('utf8') : null;
    if (text === null || !text.includes('-----BEGIN CERTIFICATE-----')) {
      throw new TypeError(`${name}[${i}] must be PEM text (-----BEGIN CERTIFICATE-----), got ${describe(pem)}`);
    }
    return text;
  });
};

const materializationStore: Check<MaterializationStore | 'CONFIDENCE_REMOTE_STORE'> = (value, name) => {
  if (value === 'CONFIDENCE_REMOTE_STORE') return value;
  if (
    value === null ||
    typeof value !== 'object' ||
    typeof (value as MaterializationStore).readMaterializations !== 'function'
  ) {
    throw new TypeError(
      `${name} must be 'CONFIDENCE_REMOTE_STORE' or an object with a readMaterializations(ops) method`,
    );
  }
  return value as MaterializationStore;
};

const engineName: Check<'native' | 'wasm'> = (value, name) => {
  if (value !== 'native' && value !== 'wasm') {
    throw new TypeError(`${name} must be 'native' or 'wasm', got ${describe(value)}`);
  }
  return value;
};

const loggerObject: Check<Logger> = (value, name) => {
  if (
    value === null ||
    typeof value !== 'object' ||
    !['error', 'warn', 'info', 'debug'].every((m) => typeof (value as Record<string, unknown>)[m] === 'function')
  ) {
    throw new TypeError(`${name} must have error, warn, info and debug methods`);
  }
  return value as Logger;
};

/** Every option, in the order the unknown-option error lists them. */
export const OPTION_SPECS = {
  flagClientSecret: { check: nonEmptyString, required: true, native: 'flagClientSecret' },
  encryptionKey: { check: aes256Key, native: 'encryptionKey' },
  initializeTimeout: { check: milliseconds(1), default: 30_000, native: null },
  stateUpdateInterval: {
    check: milliseconds(1000),
    default: DEFAULT_STATE_UPDATE_INTERVAL,
    native: 'stateUpdateIntervalMs',
  },
  flushInterval: { check: milliseconds(1000), default: 10_000, native: 'flushIntervalMs' },
  materializationStore: { check: materializationStore, native: null },
  enableApplyDedup: { check: booleanValue, default: false, native: 'enableApplyDedup' },
  disableExposureCollection: { check: booleanValue, default: false, native: 'disableExposureCollection' },
  engine: {
    check: engineName,
    defaultFrom: (given) => (given.wasmPath === undefined ? 'native' : 'wasm'),
    native: 'engine',
  },
  wasmPath: {
    check: nonEmptyString,
    native: 'wasmPath',
    // Without one of the user's, the wasm engine runs the guest built into the addon.
    toNative: (path, resolved) => (resolved.engine === 'wasm' ? path : undefined),
  },
  cdnBaseUrl: { check: httpUrl, native: 'cdnBaseUrl' },
  apiBaseUrl: { check: httpUrl, native: 'apiBaseUrl' },
  initialState: {
    check: bytes,
    native: 'initialState',
    // napi takes a Buffer; a view over the same memory, not a copy.
    toNative: (state) => state && Buffer.from(state.buffer, state.byteOffset, state.byteLength),
  },
  offline: { check: booleanValue, default: false, native: 'offline' },
  disableLogUpload: { check: booleanValue, default: false, native: 'disableLogUpload' },
  // The addon has per-route defaults for the timeouts.
  requestTimeout: { check: milliseconds(1), native: 'requestTimeoutMs' },
  snapshotPath: { check: nonEmptyString, native: 'snapshotPath' },
  connectTimeout: { check: milliseconds(1), native: 'connectTimeoutMs' },
  readTimeout: { check: milliseconds(1), native: 'readTimeoutMs' },
  proxy: { check: nonEmptyString, native: 'proxy' },
  caCertificates: { check: pemCertificates, native: 'caCertificates' },
  userAgent: { check: nonEmptyString, native: 'userAgent' },
  staleAfter: {
    check: milliseconds(1),
    defaultFrom: (given) => 5 * (given.stateUpdateInterval ?? DEFAULT_STATE_UPDATE_INTERVAL),
    native: null,
  },
  logger: { check: loggerObject, default: consoleLogger, native: null },
} satisfies { [K in keyof ProviderOptions]-?: OptionSpec<Exclude<ProviderOptions[K], undefined>> };

type Specs = typeof OPTION_SPECS;

/** An option after resolution: what its check returns, `undefined` included when it has no default. */
type Resolved<S> = S extends { check: Check<infer T> }
  ? S extends { required: true } | { default: unknown } | { defaultFrom: unknown }
    ? T
    : T | undefined
  : never;

/** Options after validation, with defaults applied. */
export type ResolvedOptions = { readonly [K in keyof Specs]: Resolved<Specs[K]> };

type NativeValue<S> = S extends { toNative(...args: never[]): infer V } ? V : Resolved<S>;

/** What the table hands the addon; a type that does not fit `NativeOptions` fails the build. */
type NativeFields = { [K in keyof Specs as Specs[K]['native'] & string]: NativeValue<Specs[K]> };

const SPECS = Object.entries(OPTION_SPECS) as [keyof Specs, OptionSpec<unknown>][];
const OPTION_NAMES = SPECS.map(([name]) => name);

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return `${typeof value} ${String(value)}`;
}

/** Validates `options` and applies defaults; throws TypeError/RangeError naming the option. */
export function resolveOptions(input: ProviderOptions): ResolvedOptions {
  if (input === null || typeof input !== 'object') {
    throw new TypeError('ConfidenceServerProviderLocal needs an options object with flagClientSecret');
  }
  const given = input as unknown as Record<string, unknown>;
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(OPTION_SPECS, key)) {
      const hint = key === 'fetch' ? ' (the native addon does its own HTTP: use cdnBaseUrl/apiBaseUrl)' : '';
      throw new TypeError(`unknown option ${JSON.stringify(key)}${hint}; known: ${OPTION_NAMES.join(', ')}`);
    }
  }
  const resolved: Record<string, unknown> = {};
  for (const [name, spec] of SPECS) {
    const value = given[name];
    if (value !== undefined) resolved[name] = spec.check(value, name);
    else if (spec.required) throw new TypeError(`${name} is required`);
  }
  // Defaults after every check, so a default computed from other options reads valid values.
  for (const [name, spec] of SPECS) {
    if (given[name] === undefined) resolved[name] = spec.defaultFrom ? spec.defaultFrom(input) : spec.default;
  }
  const options = resolved as ResolvedOptions;
  // Rules between options.
  if (options.offline && options.initialState === undefined) {
    throw new RangeError('offline: true needs an initialState to resolve from');
  }
  if (options.engine === 'native' && options.wasmPath !== undefined) {
    throw new TypeError("wasmPath runs a resolver module: it needs engine: 'wasm' (or no engine option)");
  }
  return options;
}

/** The addon's constructor options for `options`: every entry with a native name, in native form. */
export function nativeOptions(options: ResolvedOptions): NativeOptions {
  const native: Record<string, unknown> = { sdkVersion: SDK_VERSION };
  for (const [name, spec] of SPECS) {
    if (spec.native === null) continue;
    native[spec.native] = spec.toNative ? spec.toNative(options[name], options) : options[name];
  }
  return native as NativeFields & Pick<NativeOptions, 'sdkVersion'>;
}
