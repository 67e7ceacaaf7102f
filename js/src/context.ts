// OpenFeature evaluation context → the JSON the resolver reads as a `google.protobuf.Struct`.
//
// Conversions (also in the README):
// - `targetingKey` becomes `targeting_key` (it wins over an explicit `targeting_key`);
//   `_confidence_skip_apply` is removed and only controls exposure logging;
// - strings, booleans, finite numbers and null as they are; `undefined` attributes are left out
//   (in arrays they become null, as in JSON);
// - `Date` → ISO-8601 string (Confidence's timestamp rules parse it); a safe-integer `bigint`
//   → number;
// - arrays → lists, plain objects (and objects with `toJSON`) → structs;
// - rejected with INVALID_CONTEXT, naming the attribute: NaN and ±Infinity, invalid dates,
//   bigints beyond 2^53, cycles, functions, symbols, Map/Set/typed arrays (JSON would silently
//   turn them into `{}` or drop them, which would target the wrong users).
import type { EvaluationContext } from '@openfeature/server-sdk';

export class InvalidContextError extends Error {}

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
    const text = write(value, key, seen);
    if (text === undefined) return;
    out += `${first ? '' : ','}${JSON.stringify(key)}:${text}`;
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

function write(value: unknown, path: string, seen: object[]): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new InvalidContextError(`${path}: ${value} is not a finite number`);
      return JSON.stringify(value);
    case 'bigint':
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new InvalidContextError(`${path}: bigint ${value} is outside the safe integer range`);
      }
      return String(value);
    case 'undefined':
      return undefined;
    case 'function':
    case 'symbol':
      throw new InvalidContextError(`${path}: a ${typeof value} is not a context value`);
  }
  if (value === null) return 'null';
  const object = value as object;
  if (object instanceof Date) {
    if (Number.isNaN(object.getTime())) throw new InvalidContextError(`${path}: invalid Date`);
    return JSON.stringify(object.toISOString());
  }
  if (seen.includes(object)) throw new InvalidContextError(`${path}: circular reference`);
  if (object instanceof Map || object instanceof Set || ArrayBuffer.isView(object) || object instanceof ArrayBuffer) {
    throw new InvalidContextError(`${path}: ${object.constructor.name} is not a context value; use an array or object`);
  }
  seen.push(object);
  try {
    if (Array.isArray(object)) {
      return `[${object.map((item, i) => write(item, `${path}[${i}]`, seen) ?? 'null').join(',')}]`;
    }
    const toJSON = (object as { toJSON?: unknown }).toJSON;
    if (typeof toJSON === 'function') return write(toJSON.call(object), path, seen);
    const parts: string[] = [];
    for (const [key, item] of Object.entries(object)) {
      const text = write(item, `${path}.${key}`, seen);
      if (text !== undefined) parts.push(`${JSON.stringify(key)}:${text}`);
    }
    return `{${parts.join(',')}}`;
  } finally {
    seen.pop();
  }
}
