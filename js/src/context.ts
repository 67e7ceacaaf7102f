// OpenFeature evaluation context → the JSON the resolver reads as a `google.protobuf.Struct`.
//
// Conversions (also in the README):
// - `targetingKey` becomes `targeting_key` (it wins over an explicit `targeting_key`);
//   `_confidence_skip_apply` is removed and only controls exposure logging;
// - strings, booleans, finite numbers and null as they are; `undefined` attributes are left out
//   (in arrays they become null, and so do holes, as in JSON);
// - `Date` → ISO-8601 string (Confidence's timestamp rules parse it); a safe-integer `bigint`
//   → number;
// - arrays → lists, plain objects (and objects with `toJSON`, called once as JSON does) → structs;
// - at most `MAX_DEPTH` (64) levels of arrays and objects inside an attribute: the resolver's JSON
//   parser refuses more than 128 levels, and stopping at 64 keeps this walk's recursion short, so
//   a context nested 100k deep is an INVALID_CONTEXT, never a stack overflow;
// - rejected with INVALID_CONTEXT, naming the attribute: NaN and ±Infinity, invalid dates,
//   bigints beyond 2^53, cycles, deeper nesting, strings or keys with lone surrogates (the
//   resolver cannot read them), functions, symbols, Map/Set/typed arrays (JSON would silently
//   turn them into `{}` or drop them, which would target the wrong users).
// Messages name the attribute by its path (`user.tags[2]`), never a JSON parser position, and
// repeat at most 200 characters of any path or value (`echo`).
import type { EvaluationContext } from '@openfeature/server-sdk';

import { echo } from './evaluate';

export class InvalidContextError extends Error {}

/** Levels of arrays and objects an attribute's value may nest (`{ a: [1] }`: `a` uses 1). */
export const MAX_DEPTH = 64;

/** Unpaired UTF-16 halves: JSON.stringify escapes them, and the resolver's parser refuses those escapes. */
const LONE_SURROGATE = /\p{Surrogate}/u;

export interface ConvertedContext {
  json: string;
  /** False when the context carries `_confidence_skip_apply: true`. */
  apply: boolean;
}

export function convertContext(context: EvaluationContext | undefined): ConvertedContext {
  let apply = true;
  let out = '{';
  let first = true;
  const seen: object[] = [];
  const ctx = (context ?? {}) as Record<string, unknown>;
  const put = (key: string, value: unknown) => {
    const written = write(value, key, 0, seen);
    if (written === undefined) return;
    out += `${first ? '' : ','}${text(key, key, 'the key')}:${written}`;
    first = false;
  };
  for (const key of Object.keys(ctx)) {
    if (key === '_confidence_skip_apply') {
      apply = ctx[key] !== true;
    } else if (key === 'targetingKey' || key === 'targeting_key') {
      // written once below, under the resolver's name
    } else {
      put(key, ctx[key]);
    }
  }
  const targeting = ctx.targetingKey !== undefined ? ctx.targetingKey : ctx.targeting_key;
  if (targeting !== undefined) put('targeting_key', targeting);
  return { json: `${out}}`, apply };
}

function reject(path: string, problem: string): never {
  throw new InvalidContextError(`${echo(path)}: ${problem}`);
}

function text(value: string, path: string, what: string): string {
  if (LONE_SURROGATE.test(value)) reject(path, `${what} has a lone surrogate (not well-formed Unicode)`);
  return JSON.stringify(value);
}

/**
 * `value` as JSON, or undefined to leave it out. `depth` counts the arrays and objects around
 * `value` inside its attribute; recursion stops at `MAX_DEPTH` (plus one `toJSON` per level).
 */
function write(value: unknown, path: string, depth: number, seen: object[], viaToJSON = false): string | undefined {
  switch (typeof value) {
    case 'string':
      return text(value, path, 'the string');
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) reject(path, `${value} is not a finite number`);
      return JSON.stringify(value);
    case 'bigint':
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        reject(path, `bigint ${echo(value)} is outside the safe integer range`);
      }
      return String(value);
    case 'undefined':
      return undefined;
    case 'function':
    case 'symbol':
      reject(path, `a ${typeof value} is not a context value`);
  }
  if (value === null) return 'null';
  const object = value as object;
  if (object instanceof Date) {
    if (Number.isNaN(object.getTime())) reject(path, 'invalid Date');
    return JSON.stringify(object.toISOString());
  }
  if (seen.includes(object)) reject(path, 'circular reference');
  if (object instanceof Map || object instanceof Set || ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
    reject(path, `${echo(object.constructor.name)} is not a context value; use an array or object`);
  }
  seen.push(object);
  try {
    const toJSON = (object as { toJSON?: unknown }).toJSON;
    // Only once, as JSON.stringify does: a toJSON returning another such object cannot loop.
    if (!viaToJSON && !Array.isArray(object) && typeof toJSON === 'function') {
      return write(toJSON.call(object), path, depth, seen, true);
    }
    if (depth >= MAX_DEPTH) reject(path, `more than ${MAX_DEPTH} levels of nested arrays and objects`);
    if (Array.isArray(object)) {
      // An index loop, not map(): map skips holes, which JSON writes as null.
      const items: string[] = [];
      for (let i = 0; i < object.length; i++) items.push(write(object[i], `${path}[${i}]`, depth + 1, seen) ?? 'null');
      return `[${items.join(',')}]`;
    }
    const parts: string[] = [];
    for (const [key, item] of Object.entries(object)) {
      const itemPath = `${path}.${key}`;
      const written = write(item, itemPath, depth + 1, seen);
      if (written !== undefined) parts.push(`${text(key, itemPath, 'the key')}:${written}`);
    }
    return `{${parts.join(',')}}`;
  } finally {
    seen.pop();
  }
}
