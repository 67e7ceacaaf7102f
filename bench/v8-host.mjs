// Baseline 1: the resolver guest run by V8's own WebAssembly, through a small host written here
// that follows the architecture of Confidence's official Node provider (docs/guest-abi.md and docs/resolver.md):
// one instance on the JS thread, protobuf encoding and decoding in JS, and per evaluation a
// resolve, a `register_resolve` telemetry call and an assign-only flush. Network uploads are
// left out (the flushed bytes are only counted), which flatters this baseline slightly.
import { createDecipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { decodeClientResolverState, Reader, readStruct, readStructSchema, Writer, writeValue } from './lib/proto.mjs';

const SDK_ID_JS_LOCAL_SERVER_PROVIDER = 22;
const SDK_VERSION = '0.0.0-bench';
const REASONS = [
  'UNSPECIFIED',
  'MATCH',
  'NO_SEGMENT_MATCH',
  'NO_TREATMENT_MATCH',
  'FLAG_ARCHIVED',
  'TARGETING_KEY_ERROR',
  'ERROR',
  'ERROR', // UNRECOGNIZED_TARGETING_RULE reads as ERROR in bundles (docs/resolver.md, "Provider behaviour")
  'MATERIALIZATION_NOT_SUPPORTED',
];
const TELEMETRY = {
  MATCH: 1,
  NO_SEGMENT_MATCH: 2,
  NO_TREATMENT_MATCH: 3,
  FLAG_ARCHIVED: 4,
  TARGETING_KEY_ERROR: 5,
  ERROR: 6,
  MATERIALIZATION_NOT_SUPPORTED: 8,
  TYPE_MISMATCH: 9,
  FLAG_NOT_FOUND: 10,
  BUNDLE: 11,
};
const FLUSH_INTERVAL_MS = 10_000;

/** One guest instance and the framing of docs/guest-abi.md, "Memory framing" and "Calling a guest function". */
export class Guest {
  constructor(module) {
    const imports = {
      wasm_msg: {
        wasm_msg_host_current_time: (ptr) => this.currentTime(ptr),
        wasm_msg_host_log_message: (ptr) => {
          this.release(ptr);
          return this.give(new Uint8Array([10, 0]));
        },
      },
    };
    this.x = new WebAssembly.Instance(module, imports).exports;
    this.u8 = new Uint8Array(this.x.memory.buffer);
    this.w = new Writer();
    this.clock = new Writer(32);
  }

  /** The memory view, re-derived when a call grew (and so detached) the old buffer. */
  mem() {
    if (this.u8.byteLength === 0) this.u8 = new Uint8Array(this.x.memory.buffer);
    return this.u8;
  }

  give(bytes) {
    const ptr = this.x.wasm_msg_alloc(bytes.length);
    if (ptr === 0) throw new Error('wasm_msg_alloc failed');
    this.mem().set(bytes, ptr);
    return ptr;
  }

  take(ptr) {
    if (ptr === 0) throw new Error('guest returned null');
    const m = this.mem();
    const total = m[ptr - 4] | (m[ptr - 3] << 8) | (m[ptr - 2] << 16) | (m[ptr - 1] << 24);
    const out = m.slice(ptr, ptr + total - 4);
    this.x.wasm_msg_free(ptr);
    return out;
  }

  release(ptr) {
    if (ptr !== 0) this.x.wasm_msg_free(ptr);
  }

  currentTime(ptr) {
    this.release(ptr);
    const ms = Date.now();
    const w = this.clock.reset();
    w.fork(1);
    w.uint(1, Math.floor(ms / 1000));
    w.uint(2, (ms % 1000) * 1_000_000);
    w.join();
    return this.give(w.buf.subarray(0, w.pos));
  }

  /** Calls `fn` with the request in `this.w` (or the null request) and unwraps the Response. */
  call(fn, withRequest) {
    const arg = withRequest ? this.give(this.w.buf.subarray(0, this.w.pos)) : 0;
    const r = new Reader(this.take(fn(arg)));
    let data = null;
    while (r.pos < r.end) {
      const tag = r.varint();
      if (tag === 10) data = r.sub();
      else if (tag === 18) throw new Error(r.string());
      else r.skip(tag & 7);
    }
    return data ?? new Reader(new Uint8Array(0));
  }

  setState(state, account, { enableApplyDedup = false, disableExposureCollection = false } = {}) {
    const w = this.w.reset();
    w.fork(1);
    w.bytes(1, state);
    w.string(2, account);
    w.fork(3);
    w.uint(1, SDK_ID_JS_LOCAL_SERVER_PROVIDER);
    w.string(3, SDK_VERSION);
    w.join();
    if (enableApplyDedup) w.bool(4, true);
    if (disableExposureCollection) w.bool(5, true);
    w.join();
    this.call(this.x.wasm_msg_guest_set_resolver_state, true);
  }

  /** ResolveProcessRequest{without_materializations} → the decoded ResolveFlagsResponse. */
  resolve(flags, context, apply, secret) {
    const w = this.w.reset();
    w.fork(1);
    w.fork(3);
    for (const f of flags) w.string(1, f);
    w.fork(2);
    writeContext(w, context);
    w.join();
    w.string(3, secret);
    if (apply) w.bool(4, true);
    w.fork(5);
    w.uint(1, SDK_ID_JS_LOCAL_SERVER_PROVIDER);
    w.string(3, SDK_VERSION);
    w.join();
    w.join();
    w.join();
    return decodeResolveProcessResponse(this.call(this.x.wasm_msg_guest_resolve_flags, true));
  }

  registerResolve(reason, latencyUs) {
    const w = this.w.reset();
    w.fork(1);
    if (reason) w.uint(1, reason);
    if (latencyUs) w.uint(2, latencyUs);
    w.join();
    this.call(this.x.wasm_msg_guest_register_resolve, true);
  }

  flushAssign() {
    const r = this.call(this.x.wasm_msg_guest_bounded_flush_assign, false);
    return r.buf.subarray(r.pos, r.end);
  }

  flushLogs() {
    const r = this.call(this.x.wasm_msg_guest_bounded_flush_logs, false);
    return r.buf.subarray(r.pos, r.end);
  }

  memoryBytes() {
    return this.x.memory.buffer.byteLength;
  }
}

/** The evaluation context as Struct entries: `targetingKey` → `targeting_key`, skip flag removed. */
function writeContext(w, ctx) {
  for (const key in ctx) {
    const v = ctx[key];
    if (v === undefined || key === '_confidence_skip_apply') continue;
    w.fork(1);
    w.string(1, key === 'targetingKey' ? 'targeting_key' : key);
    w.fork(2);
    writeValue(w, v);
    w.join();
    w.join();
  }
}

function decodeResolveProcessResponse(r) {
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 10) {
      const resolved = r.sub();
      while (resolved.pos < resolved.end) {
        const t = resolved.varint();
        if (t === 10) return decodeResolveFlagsResponse(resolved.sub());
        resolved.skip(t & 7);
      }
      return { resolvedFlags: [], resolveToken: new Uint8Array(0), resolveId: '' };
    }
    if (tag === 18) throw new Error('resolve suspended for materializations (no store configured)');
    r.skip(tag & 7);
  }
  throw new Error('empty ResolveProcessResponse');
}

function decodeResolveFlagsResponse(r) {
  const resolvedFlags = [];
  let resolveToken = new Uint8Array(0);
  let resolveId = '';
  while (r.pos < r.end) {
    const tag = r.varint();
    if (tag === 10) resolvedFlags.push(decodeResolvedFlag(r.sub()));
    else if (tag === 18) resolveToken = r.bytes();
    else if (tag === 26) resolveId = r.string();
    else r.skip(tag & 7);
  }
  return { resolvedFlags, resolveToken, resolveId };
}

function decodeResolvedFlag(r) {
  const f = {
    flag: '',
    variant: '',
    value: null,
    flagSchema: null,
    reason: 0,
    shouldApply: false,
    assignmentOrigin: '',
  };
  while (r.pos < r.end) {
    const tag = r.varint();
    switch (tag) {
      case 10:
        f.flag = r.string();
        break;
      case 18:
        f.variant = r.string();
        break;
      case 26:
        f.value = readStruct(r.sub());
        break;
      case 34:
        f.flagSchema = readStructSchema(r.sub());
        break;
      case 40:
        f.reason = r.varint();
        break;
      case 48:
        f.shouldApply = r.varint() !== 0;
        break;
      case 58:
        f.assignmentOrigin = r.string();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return f;
}

/** AES-256-GCM CDN payload: nonce ‖ ciphertext ‖ tag (docs/state-cdn.md, "Payload and encryption"). */
function decrypt(body, keyHex) {
  const key = Buffer.from(keyHex, 'hex');
  const d = createDecipheriv('aes-256-gcm', key, body.subarray(0, 12));
  d.setAuthTag(body.subarray(body.length - 16));
  return Buffer.concat([d.update(body.subarray(12, body.length - 16)), d.final()]);
}

const compiled = new Map();

/** Compiles a module once per process and path, as the official provider does. */
async function compile(wasmPath) {
  let m = compiled.get(wasmPath);
  if (!m) {
    m = WebAssembly.compile(readFileSync(wasmPath));
    compiled.set(wasmPath, m);
  }
  return m;
}

/**
 * An OpenFeature provider over one V8 guest instance, shaped like Confidence's official Node
 * provider: `evaluate` is its per-evaluation path, `resolve` its flag-bundle API.
 */
export class V8Provider {
  metadata = { name: 'V8WasmHost' };
  runsOn = 'server';
  hooks = [];

  /**
   * `initialState` is a CDN body (ClientResolverState); otherwise the state is fetched from
   * `cdnBaseUrl` at `initialize`, decrypted with `encryptionKey` when given.
   */
  constructor({ wasmPath, flagClientSecret, initialState, cdnBaseUrl, encryptionKey }) {
    this.wasmPath = wasmPath;
    this.secret = flagClientSecret;
    this.initialState = initialState;
    this.cdnBaseUrl = cdnBaseUrl;
    this.encryptionKey = encryptionKey;
    this.guest = null;
    this.assignBytes = 0;
    this.logBytes = 0;
    this.timer = null;
    this.hasState = false;
    // The official provider starts compiling at construction.
    this.module = compile(wasmPath);
  }

  async initialize() {
    const module = await this.module;
    let body = this.initialState;
    if (!body) {
      const digest = createHash('sha256').update(this.secret).digest('hex');
      const url = `${this.cdnBaseUrl.replace(/\/$/, '')}/${digest}${this.encryptionKey ? '.enc' : ''}`;
      const res = await fetch(url);
      if (!res.ok) throw new Error(`state fetch failed: ${res.status}`);
      body = Buffer.from(await res.arrayBuffer());
      if (this.encryptionKey) body = decrypt(body, this.encryptionKey);
    }
    this.guest = new Guest(module);
    this.applyStateBody(body);
    this.timer = setInterval(() => this.flush(), FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  async onClose() {
    clearInterval(this.timer);
    this.flush();
  }

  /** What the official poller does with a fresh 200: flush first, then swap the state in. */
  applyStateBody(body) {
    if (this.hasState) this.flush();
    const { state, account } = decodeClientResolverState(body);
    this.guest.setState(state, account);
    this.hasState = true;
  }

  flush() {
    this.logBytes += this.guest.flushLogs().length;
  }

  resolveBooleanEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.evaluate(flagKey, defaultValue, context));
  }

  resolveStringEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.evaluate(flagKey, defaultValue, context));
  }

  resolveNumberEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.evaluate(flagKey, defaultValue, context));
  }

  resolveObjectEvaluation(flagKey, defaultValue, context) {
    return Promise.resolve(this.evaluate(flagKey, defaultValue, context));
  }

  /** One evaluation: a one-flag bundle, the value at the path, telemetry, then an assign flush. */
  evaluate(flagKey, defaultValue, context) {
    const started = performance.now();
    const [name, ...path] = flagKey.split('.');
    const apply = context?._confidence_skip_apply !== true;
    const bundle = this.bundle(context, [name], apply);
    const details = fromBundle(bundle, name, path, defaultValue);
    this.telemetry(details.telemetry, started);
    this.assignBytes += this.guest.flushAssign().length;
    return details.result;
  }

  /** The flag-bundle API (`resolve(context, flagNames, apply)`). */
  resolve(context, flagNames = [], apply = false) {
    const started = performance.now();
    const bundle = this.bundle(context, flagNames, apply);
    this.telemetry(bundle.errorCode ? TELEMETRY.ERROR : TELEMETRY.BUNDLE, started);
    return bundle;
  }

  bundle(context, names, apply) {
    try {
      const res = this.guest.resolve(
        names.map((n) => `flags/${n}`),
        context,
        apply,
        this.secret,
      );
      const flags = {};
      for (const f of res.resolvedFlags) {
        flags[f.flag.slice(6)] = {
          reason: REASONS[f.reason] ?? 'UNSPECIFIED',
          variant: f.variant,
          value: f.value,
          shouldApply: f.shouldApply,
          assignmentOrigin: f.assignmentOrigin,
        };
      }
      return { flags, resolveId: res.resolveId, resolveToken: Buffer.from(res.resolveToken).toString('base64') };
    } catch (e) {
      return {
        flags: {},
        resolveId: '',
        resolveToken: '',
        errorCode: 'GENERAL',
        errorMessage: String(e?.message ?? e),
      };
    }
  }

  telemetry(reason, started) {
    const us = Math.min(0xffffffff, Math.round((performance.now() - started) * 1000));
    try {
      this.guest.registerResolve(reason, us);
    } catch {
      // best effort, as in the official provider
    }
  }

  memoryBytes() {
    return this.guest.memoryBytes();
  }
}

function fail(defaultValue, errorCode, errorMessage, telemetry) {
  return { result: { value: defaultValue, reason: 'ERROR', errorCode, errorMessage }, telemetry };
}

/** docs/resolver.md, "Provider behaviour": the value at the path, checked against the default's type. */
function fromBundle(bundle, name, path, defaultValue) {
  if (bundle.errorCode) return fail(defaultValue, bundle.errorCode, bundle.errorMessage, TELEMETRY.ERROR);
  const flag = bundle.flags[name];
  if (!flag) return fail(defaultValue, 'FLAG_NOT_FOUND', `flag ${name} not found`, TELEMETRY.FLAG_NOT_FOUND);
  if (flag.reason === 'MATERIALIZATION_NOT_SUPPORTED') {
    return fail(
      defaultValue,
      'GENERAL',
      `Flag '${name}' requires materializations.`,
      TELEMETRY.MATERIALIZATION_NOT_SUPPORTED,
    );
  }
  let value = flag.value;
  for (let i = 0; i < path.length; i++) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      return fail(defaultValue, 'TYPE_MISMATCH', 'resolved value is not an object', TELEMETRY.TYPE_MISMATCH);
    }
    value = value[path[i]];
  }
  const meta = { variant: flag.variant, reason: flag.reason, flagMetadata: { shouldApply: flag.shouldApply } };
  const telemetry = TELEMETRY[flag.reason] ?? 0;
  if (value === null) return { result: { value: defaultValue, ...meta }, telemetry };
  if (defaultValue !== null && !matches(value, defaultValue)) {
    return fail(
      defaultValue,
      'TYPE_MISMATCH',
      'resolved value does not match the default type',
      TELEMETRY.TYPE_MISMATCH,
    );
  }
  return { result: { value, ...meta }, telemetry };
}

function matches(value, defaultValue) {
  if (Array.isArray(defaultValue)) return false;
  if (typeof value !== typeof defaultValue) return false;
  if (typeof defaultValue !== 'object') return true;
  if (value === null || Array.isArray(value)) return false;
  for (const k of Object.keys(defaultValue)) {
    if (!(k in value) || !matches(value[k], defaultValue[k])) return false;
  }
  return true;
}
