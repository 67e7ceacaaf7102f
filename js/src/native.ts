// The napi binding (generated `index.js` at the package root) and the guest shipped with it.
// One place loads it, so the ESM entry (which re-exports this CommonJS build) shares it too.
import { join } from 'node:path';

import type * as Binding from '../../index.js';

export type {
  NativeMaterialization,
  NativeOptions,
  NativeResolvedFlag,
  NativeResolveResult,
  NativeResolveStep,
  NativeStatus,
} from '../../index.js';

export const binding: typeof Binding = require('../../index.js');

/** The addon's class (named here so emitted typings point at `index.js`, not at the package). */
export type NativeResolver = Binding.NativeResolver;

/** Our resolver module, built from `wasm/` and shipped inside the package. */
export const bundledWasmPath = join(__dirname, '..', '..', 'wasm', 'confidence_resolver.wasm');

/** Codes the native class puts on `err.code` (sync) or at the start of rejections (async). */
export type NativeErrorCode =
  | 'INVALID_OPTION'
  | 'INVALID_MODULE'
  | 'NOT_READY'
  | 'RESOLVER_ERROR'
  | 'RESOLVER_CRASHED'
  | 'TIMEOUT'
  | 'UPLOAD_FAILED'
  | 'STORE_FAILED';

/** Splits a native error into its stable code and its readable message. */
export function nativeError(error: unknown): { code: NativeErrorCode | undefined; message: string } {
  const raw = error instanceof Error ? error.message : String(error);
  const sync = (error as { code?: unknown } | null)?.code;
  if (typeof sync === 'string' && /^[A-Z_]+$/.test(sync) && sync !== 'InvalidArg') {
    return { code: sync as NativeErrorCode, message: raw };
  }
  const match = /^([A-Z_]+): (.*)$/s.exec(raw);
  return match ? { code: match[1] as NativeErrorCode, message: match[2] } : { code: undefined, message: raw };
}
