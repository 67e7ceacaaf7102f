// One resolved flag → OpenFeature `ResolutionDetails` (docs/resolver.md, "Provider behaviour"): dot paths into the
// flag's value, type checks against the caller's default, reasons and error codes.
import {
  ErrorCode,
  type FlagMetadata,
  type JsonValue,
  type ResolutionDetails,
  StandardResolutionReasons,
} from '@openfeature/server-sdk';

import type { NativeResolvedFlag } from './native';

/** Confidence's reason, without the `RESOLVE_REASON_` prefix, e.g. `MATCH`. */
export type ConfidenceReason =
  | 'MATCH'
  | 'NO_SEGMENT_MATCH'
  | 'NO_TREATMENT_MATCH'
  | 'FLAG_ARCHIVED'
  | 'TARGETING_KEY_ERROR'
  | 'ERROR'
  | 'MATERIALIZATION_NOT_SUPPORTED'
  | 'UNSPECIFIED';

export function confidenceReason(nativeReason: string): ConfidenceReason {
  return nativeReason.replace(/^RESOLVE_REASON_/, '') as ConfidenceReason;
}

/** Confidence's reasons as OpenFeature reasons (the README's table). */
export function openFeatureReason(reason: ConfidenceReason): string {
  switch (reason) {
    case 'MATCH':
      return StandardResolutionReasons.TARGETING_MATCH;
    case 'NO_SEGMENT_MATCH':
    case 'NO_TREATMENT_MATCH':
      return StandardResolutionReasons.DEFAULT;
    case 'FLAG_ARCHIVED':
      return StandardResolutionReasons.DISABLED;
    case 'TARGETING_KEY_ERROR':
    case 'ERROR':
    case 'MATERIALIZATION_NOT_SUPPORTED':
      return StandardResolutionReasons.ERROR;
    default:
      return StandardResolutionReasons.UNKNOWN;
  }
}

/** The `ResolveReason` number the resolver's telemetry expects for an outcome (docs/resolver.md, "Provider behaviour"). */
export const TELEMETRY_REASON = {
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
} as const;

export type FlagType = 'boolean' | 'string' | 'number' | 'object';

/** How much of a caller's input (flag key, attribute path, value) a message repeats. */
export const ECHO_LIMIT = 200;

/**
 * Caller input as a message shows it: at most `ECHO_LIMIT` characters, then `…`. Every message
 * that repeats input goes through here, so a 1 MB flag key cannot make a 1 MB error message.
 */
export function echo(input: unknown): string {
  const text = String(input);
  if (text.length <= ECHO_LIMIT) return text;
  // Never end on half a surrogate pair: the message stays well-formed Unicode.
  const high = text.charCodeAt(ECHO_LIMIT - 1);
  return `${text.slice(0, high >= 0xd800 && high <= 0xdbff ? ECHO_LIMIT - 1 : ECHO_LIMIT)}…`;
}

/** A flag key split into the flag's name and the path into its value. */
export interface FlagKey {
  name: string;
  path: string[];
}

/** `flag.path.to.value` → name and path; `undefined` when a part is empty. */
export function parseFlagKey(flagKey: string): FlagKey | undefined {
  if (typeof flagKey !== 'string') return undefined;
  const [name, ...path] = flagKey.split('.');
  if (!name || path.some((p) => p.length === 0)) return undefined;
  return { name, path };
}

/** An error result: the caller's default, reason ERROR, a code and a message. */
export function failure<T>(
  defaultValue: T,
  errorCode: ErrorCode,
  errorMessage: string,
  flagMetadata?: FlagMetadata,
): ResolutionDetails<T> {
  return { value: defaultValue, reason: StandardResolutionReasons.ERROR, errorCode, errorMessage, flagMetadata };
}

/** What D.8 rows 3–7 make of one resolved flag. `flag` undefined = absent from the response. */
export function toDetails<T>(
  key: FlagKey,
  flag: NativeResolvedFlag | undefined,
  defaultValue: T,
  type: FlagType,
  metadata: FlagMetadata,
): { details: ResolutionDetails<T>; telemetry: number } {
  if (!flag) {
    const message = `Flag '${echo(key.name)}' was not found (unknown, archived, or not enabled for this client)`;
    return {
      details: failure(defaultValue, ErrorCode.FLAG_NOT_FOUND, message, metadata),
      telemetry: TELEMETRY_REASON.FLAG_NOT_FOUND,
    };
  }
  const reason = confidenceReason(flag.reason);
  const flagMetadata: FlagMetadata = {
    ...metadata,
    confidenceReason: reason,
    assignmentOrigin: flag.assignmentOrigin,
    shouldApply: flag.shouldApply,
  };
  const telemetry = TELEMETRY_REASON[reason as keyof typeof TELEMETRY_REASON] ?? 0;
  if (reason === 'MATERIALIZATION_NOT_SUPPORTED') {
    const message = `Flag '${echo(key.name)}' requires materializations. Configure a materialization store.`;
    return { details: failure(defaultValue, ErrorCode.GENERAL, message, flagMetadata), telemetry };
  }
  if (reason === 'TARGETING_KEY_ERROR') {
    const message = `Flag '${echo(key.name)}' needs a targeting key: the context's key must be a string or an integer of at most 100 bytes`;
    return { details: failure(defaultValue, ErrorCode.TARGETING_KEY_MISSING, message, flagMetadata), telemetry };
  }
  let value: JsonValue = flag.valueJson === undefined ? null : (JSON.parse(flag.valueJson) as JsonValue);
  for (let i = 0; i < key.path.length; i++) {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      if (i === 0 && value === null) break; // no variant assigned: the default, below
      const at = [key.name, ...key.path.slice(0, i)].join('.');
      return {
        details: failure(
          defaultValue,
          ErrorCode.TYPE_MISMATCH,
          `resolved value is not an object at ${echo(at)}`,
          flagMetadata,
        ),
        telemetry: TELEMETRY_REASON.TYPE_MISMATCH,
      };
    }
    value = (value as Record<string, JsonValue>)[key.path[i]] as JsonValue;
  }
  const at = [key.name, ...key.path].join('.');
  const problem = mismatch(value, defaultValue, type, at);
  if (problem) {
    return {
      details: failure(defaultValue, ErrorCode.TYPE_MISMATCH, problem, flagMetadata),
      telemetry: TELEMETRY_REASON.TYPE_MISMATCH,
    };
  }
  return {
    details: {
      value: (value === null ? defaultValue : value) as T,
      variant: flag.variant,
      reason: openFeatureReason(reason),
      flagMetadata,
    },
    telemetry,
  };
}

function kind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

/** Why `value` cannot stand in for `defaultValue`, or undefined when it can (D.8 row 6). */
function mismatch(value: unknown, defaultValue: unknown, type: FlagType, at: string): string | undefined {
  if (value === null) return undefined; // no value: the caller gets the default, no error
  if (value === undefined)
    return `resolved value (undefined) isn't assignable to default type (${type}) at ${echo(at)}`;
  if (type !== 'object') {
    return typeof value === type
      ? undefined
      : `resolved value (${kind(value)}) isn't assignable to default type (${type}) at ${echo(at)}`;
  }
  if (Array.isArray(defaultValue)) return `arrays are not supported as default values (at ${echo(at)})`;
  if (defaultValue === null || defaultValue === undefined) return undefined;
  if (kind(value) !== kind(defaultValue)) {
    return `resolved value (${kind(value)}) isn't assignable to default type (${kind(defaultValue)}) at ${echo(at)}`;
  }
  if (typeof defaultValue === 'object') {
    for (const [field, inner] of Object.entries(defaultValue as Record<string, unknown>)) {
      const resolved = (value as Record<string, unknown>)[field];
      if (resolved === undefined) return `resolved value is missing field "${echo(field)}" at ${echo(at)}`;
      const problem = mismatch(
        resolved,
        inner,
        typeof inner === 'object' ? 'object' : (typeof inner as FlagType),
        `${at}.${field}`,
      );
      if (problem) return problem;
    }
  }
  return undefined;
}
