// Provider options: names follow Confidence's official Node provider (migrating is a change of
// import), validated once at construction so a typo fails loudly instead of at 3 a.m.
import type { Logger } from '@openfeature/server-sdk';

import type { MaterializationStore } from './materialization';

export interface ProviderOptions {
  /** The client secret of a Confidence flag client (required). */
  flagClientSecret: string;
  /** 64 hex characters (AES-256): fetch the encrypted copy of the state and decrypt it. */
  encryptionKey?: string;
  /** Bound on the first state load, in ms (default 30 000). */
  initializeTimeout?: number;
  /** How often the state is revalidated against the CDN, in ms (default 30 000, at least 1000). */
  stateUpdateInterval?: number;
  /** How often evaluation logs are uploaded, in ms (default 10 000, at least 1000). */
  flushInterval?: number;
  /**
   * Sticky assignments and materialized segments: a store of your own (see
   * `InMemoryMaterializationStore`), or `'CONFIDENCE_REMOTE_STORE'` for the one Confidence keeps.
   */
  materializationStore?: MaterializationStore | 'CONFIDENCE_REMOTE_STORE';
  /** Experimental: let the resolver skip exposures it has already logged (default false). */
  enableApplyDedup?: boolean;
  /** Never log exposures (assignments); resolve logs and telemetry still flow (default false). */
  disableExposureCollection?: boolean;
  /**
   * How flags are resolved: `'native'` (default) runs Confidence's resolver crate linked into
   * the addon; `'wasm'` runs a resolver WebAssembly module in wasmtime (this package's, or
   * `wasmPath`). Both give the same answers and logs; native is several times faster.
   */
  engine?: 'native' | 'wasm';
  /** A resolver module with Confidence's guest ABI for the wasm engine (implies `engine: 'wasm'`). */
  wasmPath?: string;
  /** Where states are fetched (default `https://confidence-resolver-state-cdn.spotifycdn.com`). */
  cdnBaseUrl?: string;
  /** Where logs are uploaded (default Confidence's production API). */
  apiBaseUrl?: string;
  /**
   * A state as the CDN serves it (encrypted when `encryptionKey` is set), or the content of a
   * `snapshotPath` file (e.g. baked into an image): ready at once.
   */
  initialState?: Uint8Array;
  /**
   * Last-known-good snapshot file. Every downloaded state is written here (atomically, still
   * encrypted when it came encrypted, with its ETag); when the CDN cannot be reached within
   * `initializeTimeout`, the provider starts from it (READY, `stateFromSnapshot` in flag
   * metadata, a warning logged) and keeps revalidating it with the CDN. A corrupt, truncated or
   * another client's file is ignored with a warning.
   */
  snapshotPath?: string;
  /** Never open a connection: resolve from `initialState` only (logs are kept, not sent). */
  offline?: boolean;
  /**
   * Zero egress for logs: fetch fresh states, but never send resolve logs, exposures or
   * telemetry (previews, CI, jobs that must not emit). Unlike `disableExposureCollection`,
   * nothing at all is uploaded. Default false.
   */
  disableLogUpload?: boolean;
  /** Bound of one HTTP request, in ms (default 10 000 for state fetches, 5000 for log uploads). */
  requestTimeout?: number;
  /** Bound on establishing a connection (TCP, proxy tunnel, TLS), in ms (default 5000). */
  connectTimeout?: number;
  /** Bound on each wait for response data, in ms (default: only `requestTimeout` applies). */
  readTimeout?: number;
  /**
   * Proxy for all of the provider's traffic, `http://[user:password@]host:port`. Without it,
   * `HTTPS_PROXY`/`HTTP_PROXY` apply to non-loopback targets; `NO_PROXY` is honoured in both cases.
   */
  proxy?: string;
  /** Extra trusted CA certificates (PEM), besides the system's and `NODE_EXTRA_CA_CERTS`. */
  caCertificates?: string | Uint8Array | Array<string | Uint8Array>;
  /** A product token sent before the package's own in `User-Agent`, e.g. `my-service/1.4`. */
  userAgent?: string;
  /** Emit PROVIDER_STALE when no fresh state arrived for this long, in ms (default 5 × stateUpdateInterval). */
  staleAfter?: number;
  /** Where the provider reports warnings (default: `console` for warn and error). */
  logger?: Logger;
}

/** Options after validation, with defaults applied. */
export interface ResolvedOptions {
  flagClientSecret: string;
  encryptionKey: string | undefined;
  initializeTimeout: number;
  stateUpdateInterval: number;
  flushInterval: number;
  materializationStore: MaterializationStore | 'CONFIDENCE_REMOTE_STORE' | undefined;
  enableApplyDedup: boolean;
  disableExposureCollection: boolean;
  engine: 'native' | 'wasm';
  wasmPath: string | undefined;
  cdnBaseUrl: string | undefined;
  apiBaseUrl: string | undefined;
  initialState: Uint8Array | undefined;
  offline: boolean;
  disableLogUpload: boolean;
  requestTimeout: number | undefined;
  snapshotPath: string | undefined;
  connectTimeout: number | undefined;
  readTimeout: number | undefined;
  proxy: string | undefined;
  caCertificates: string[] | undefined;
  userAgent: string | undefined;
  staleAfter: number;
  logger: Logger;
}

const KNOWN = new Set([
  'flagClientSecret',
  'encryptionKey',
  'initializeTimeout',
  'stateUpdateInterval',
  'flushInterval',
  'materializationStore',
  'enableApplyDedup',
  'disableExposureCollection',
  'engine',
  'wasmPath',
  'cdnBaseUrl',
  'apiBaseUrl',
  'initialState',
  'offline',
  'disableLogUpload',
  'requestTimeout',
  'snapshotPath',
  'connectTimeout',
  'readTimeout',
  'proxy',
  'caCertificates',
  'userAgent',
  'staleAfter',
  'logger',
]);

/** Native timers take unsigned 32-bit milliseconds (~49 days). */
const MAX_MS = 2 ** 32 - 1;

const consoleLogger: Logger = {
  error: (...args) => console.error('[confidence]', ...args),
  warn: (...args) => console.warn('[confidence]', ...args),
  info: () => {},
  debug: () => {},
};

function optionalString(options: Record<string, unknown>, name: string): string | undefined {
  const value = options[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0) {
    throw new TypeError(`${name} must be a non-empty string, got ${describe(value)}`);
  }
  return value;
}

function optionalBoolean(options: Record<string, unknown>, name: string): boolean {
  const value = options[name];
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new TypeError(`${name} must be a boolean, got ${describe(value)}`);
  return value;
}

function milliseconds(options: Record<string, unknown>, name: string, fallback: number, min: number): number {
  const value = options[name];
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer number of milliseconds, got ${describe(value)}`);
  }
  if (value < min || value > MAX_MS) {
    throw new RangeError(`${name} must be between ${min} and ${MAX_MS} ms, got ${value}`);
  }
  return value;
}

/** Timeouts that are optional (the addon has per-route defaults). */
function optionalMilliseconds(options: Record<string, unknown>, name: string): number | undefined {
  return options[name] === undefined ? undefined : milliseconds(options, name, 0, 1);
}

/** PEM text from strings or bytes, one entry per bundle. */
function certificates(options: Record<string, unknown>): string[] | undefined {
  const value = options.caCertificates;
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? value : [value];
  return list.map((pem, i) => {
    const text = typeof pem === 'string' ? pem : pem instanceof Uint8Array ? Buffer.from(pem).toString('utf8') : null;
    if (text === null || !text.includes('-----BEGIN CERTIFICATE-----')) {
      throw new TypeError(`caCertificates[${i}] must be PEM text (-----BEGIN CERTIFICATE-----), got ${describe(pem)}`);
    }
    return text;
  });
}

function url(options: Record<string, unknown>, name: string): string | undefined {
  const value = optionalString(options, name);
  if (value === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new TypeError(`${name} must be an absolute http(s) URL, got ${JSON.stringify(value)}`);
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new TypeError(`${name} must be an http(s) URL, got ${JSON.stringify(value)}`);
  }
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(parsed.hostname) || /^127\./.test(parsed.hostname);
  if (parsed.protocol === 'http:' && !loopback) {
    throw new TypeError(`${name}: plain http is only allowed to loopback addresses, got ${JSON.stringify(value)}`);
  }
  return value;
}

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
  const options = input as unknown as Record<string, unknown>;
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) {
      const hint = key === 'fetch' ? ' (the native addon does its own HTTP: use cdnBaseUrl/apiBaseUrl)' : '';
      throw new TypeError(`unknown option ${JSON.stringify(key)}${hint}; known: ${[...KNOWN].join(', ')}`);
    }
  }
  const flagClientSecret = optionalString(options, 'flagClientSecret');
  if (flagClientSecret === undefined) throw new TypeError('flagClientSecret is required');

  const encryptionKey = optionalString(options, 'encryptionKey');
  if (encryptionKey !== undefined && !/^[0-9a-fA-F]{64}$/.test(encryptionKey.trim())) {
    throw new TypeError('encryptionKey must be 64 hex characters (an AES-256 key)');
  }
  const stateUpdateInterval = milliseconds(options, 'stateUpdateInterval', 30_000, 1000);
  const initialState = options.initialState;
  if (initialState !== undefined && !(initialState instanceof Uint8Array)) {
    throw new TypeError(`initialState must be a Buffer or Uint8Array, got ${describe(initialState)}`);
  }
  const offline = optionalBoolean(options, 'offline');
  if (offline && initialState === undefined) {
    throw new RangeError('offline: true needs an initialState to resolve from');
  }
  const store = options.materializationStore;
  if (
    store !== undefined &&
    store !== 'CONFIDENCE_REMOTE_STORE' &&
    (store === null ||
      typeof store !== 'object' ||
      typeof (store as MaterializationStore).readMaterializations !== 'function')
  ) {
    throw new TypeError(
      "materializationStore must be 'CONFIDENCE_REMOTE_STORE' or an object with a readMaterializations(ops) method",
    );
  }
  const wasmPath = optionalString(options, 'wasmPath');
  const engine = options.engine ?? (wasmPath === undefined ? 'native' : 'wasm');
  if (engine !== 'native' && engine !== 'wasm') {
    throw new TypeError(`engine must be 'native' or 'wasm', got ${describe(engine)}`);
  }
  if (engine === 'native' && wasmPath !== undefined) {
    throw new TypeError("wasmPath runs a resolver module: it needs engine: 'wasm' (or no engine option)");
  }
  const logger = options.logger;
  if (
    logger !== undefined &&
    (logger === null ||
      typeof logger !== 'object' ||
      !['error', 'warn', 'info', 'debug'].every((m) => typeof (logger as Record<string, unknown>)[m] === 'function'))
  ) {
    throw new TypeError('logger must have error, warn, info and debug methods');
  }
  return {
    flagClientSecret,
    encryptionKey: encryptionKey?.trim(),
    initializeTimeout: milliseconds(options, 'initializeTimeout', 30_000, 1),
    stateUpdateInterval,
    flushInterval: milliseconds(options, 'flushInterval', 10_000, 1000),
    materializationStore: store as MaterializationStore | 'CONFIDENCE_REMOTE_STORE' | undefined,
    enableApplyDedup: optionalBoolean(options, 'enableApplyDedup'),
    disableExposureCollection: optionalBoolean(options, 'disableExposureCollection'),
    engine,
    wasmPath,
    cdnBaseUrl: url(options, 'cdnBaseUrl'),
    apiBaseUrl: url(options, 'apiBaseUrl'),
    initialState: initialState as Uint8Array | undefined,
    offline,
    disableLogUpload: optionalBoolean(options, 'disableLogUpload'),
    requestTimeout: optionalMilliseconds(options, 'requestTimeout'),
    snapshotPath: optionalString(options, 'snapshotPath'),
    connectTimeout: optionalMilliseconds(options, 'connectTimeout'),
    readTimeout: optionalMilliseconds(options, 'readTimeout'),
    proxy: optionalString(options, 'proxy'),
    caCertificates: certificates(options),
    userAgent: optionalString(options, 'userAgent'),
    staleAfter: milliseconds(options, 'staleAfter', 5 * stateUpdateInterval, 1),
    logger: (logger as Logger | undefined) ?? consoleLogger,
  };
}
