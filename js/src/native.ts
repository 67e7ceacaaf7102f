// The napi binding (generated `index.js` at the package root), loaded on first use.
// One place loads it, so the ESM entry (which re-exports this CommonJS build) shares it too.

import type * as Binding from '../../index.js';

export type {
  NativeMaterialization,
  NativeOptions,
  NativeResolvedFlag,
  NativeResolveResult,
  NativeResolveStep,
  NativeStatus,
} from '../../index.js';

let loaded: typeof Binding | undefined;

/**
 * The addon, loaded on first use: importing the provider's modules needs no addon, so unit tests
 * run without one and a process that never constructs a provider never loads it.
 */
export function binding(): typeof Binding {
  loaded ??= require('../../index.js') as typeof Binding;
  return loaded;
}

/** The addon's class (named here so emitted typings point at `index.js`, not at the package). */
export type NativeResolver = Binding.NativeResolver;

/** How the provider gets its native resolver: the addon's class, or a unit test's fake. */
export type NativeResolverFactory = (options: Binding.NativeOptions) => NativeResolver;

let replacement: NativeResolverFactory | undefined;

/** The factory in force; asking for the addon's loads it. */
export function nativeResolverFactory(): NativeResolverFactory {
  if (replacement) return replacement;
  const { NativeResolver } = binding();
  return (options) => new NativeResolver(options);
}

/**
 * For unit tests (this module is not exported by the package): providers constructed from now on
 * get their resolver from `factory`; `undefined` restores the addon.
 */
export function setNativeResolverFactory(factory: NativeResolverFactory | undefined): void {
  replacement = factory;
}

/** The codes native errors carry on `err.code` (thrown and rejected alike; src/errors.rs). */
export const NATIVE_ERROR_CODES = [
  'INVALID_OPTION',
  'INVALID_MODULE',
  'INVALID_CONTEXT',
  'NOT_READY',
  'RESOLVER_ERROR',
  'RESOLVER_CRASHED',
  'TIMEOUT',
  'UPLOAD_FAILED',
  'STORE_FAILED',
] as const;

export type NativeErrorCode = (typeof NATIVE_ERROR_CODES)[number];

/** A native error's stable code (read from `err.code`, never from the text) and its message. */
export function nativeError(error: unknown): { code: NativeErrorCode | undefined; message: string } {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  const known = typeof code === 'string' && (NATIVE_ERROR_CODES as readonly string[]).includes(code);
  return { code: known ? (code as NativeErrorCode) : undefined, message };
}
