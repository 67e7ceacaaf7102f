// Evaluation context → resolver JSON (js/src/context.ts): every conversion its header documents,
// every rejection naming the attribute, the depth limit and bounded messages. No addon, no server.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { convertContext, InvalidContextError, MAX_DEPTH } from '../../dist/cjs/context.js';
import { ECHO_LIMIT } from '../../dist/cjs/evaluate.js';

/** The converted context as an object, and whether exposure is logged. */
const convert = (context) => {
  const { json, apply } = convertContext(context);
  return { value: JSON.parse(json), apply };
};

/** The InvalidContextError `context` is rejected with (fails the test on anything else). */
const rejection = (context) => {
  try {
    convertContext(context);
  } catch (e) {
    assert.ok(e instanceof InvalidContextError, `expected an InvalidContextError, got ${e}`);
    return e.message;
  }
  assert.fail('the context was accepted');
};

/** `levels` arrays/objects around `leaf`; `wrap(inner, i)` builds level i (a loop: any depth). */
const nest = (levels, wrap, leaf = 1) => {
  let value = leaf;
  for (let i = 0; i < levels; i++) value = wrap(value, i);
  return value;
};
const inObject = (inner) => ({ d: inner });
const inArray = (inner) => [inner];
const mixed = (inner, i) => (i % 2 ? [inner] : { d: inner });

test('strings, booleans, finite numbers and null pass as they are; no context is an empty struct', () => {
  assert.deepEqual(convert({ s: 'x', t: true, f: false, n: -1.5, z: 0, nil: null }).value, {
    s: 'x',
    t: true,
    f: false,
    n: -1.5,
    z: 0,
    nil: null,
  });
  assert.deepEqual(convertContext(undefined), { json: '{}', apply: true });
  assert.deepEqual(convertContext({}), { json: '{}', apply: true });
  assert.deepEqual(convert({ 'a "quoted"\nkey': 1 }).value, { 'a "quoted"\nkey': 1 });
});

test('targetingKey becomes targeting_key and wins over an explicit targeting_key', () => {
  assert.deepEqual(convert({ targetingKey: 'u1', country: 'SE' }).value, { country: 'SE', targeting_key: 'u1' });
  assert.deepEqual(convert({ targeting_key: 'explicit', targetingKey: 'u1' }).value, { targeting_key: 'u1' });
  assert.deepEqual(convert({ targeting_key: 'explicit' }).value, { targeting_key: 'explicit' });
  // Once in the text, not twice (JSON.parse would hide a duplicate).
  assert.equal(convertContext({ targeting_key: 'explicit' }).json, '{"targeting_key":"explicit"}');
  assert.deepEqual(convert({ targetingKey: undefined, targeting_key: 'explicit' }).value, {
    targeting_key: 'explicit',
  });
});

test('_confidence_skip_apply is removed and only true turns exposure logging off', () => {
  assert.deepEqual(convert({ _confidence_skip_apply: true, a: 1 }), { value: { a: 1 }, apply: false });
  assert.deepEqual(convert({ _confidence_skip_apply: false, a: 1 }), { value: { a: 1 }, apply: true });
  assert.deepEqual(convert({ _confidence_skip_apply: 'yes' }), { value: {}, apply: true });
  assert.equal(convert({ a: 1 }).apply, true);
});

test('undefined attributes are left out, in arrays they become null', () => {
  assert.deepEqual(convert({ gone: undefined, user: { tier: 'gold', since: undefined } }).value, {
    user: { tier: 'gold' },
  });
  assert.deepEqual(convert({ list: [1, undefined, null, 'x'] }).value, { list: [1, null, null, 'x'] });
});

test('holes in arrays become null, as in JSON.stringify', () => {
  // biome-ignore lint/suspicious/noSparseArray: the hole is what is tested
  const context = { tags: ['a', , 'b'], empty: new Array(3), nested: { list: [[, 1]] } };
  assert.equal(convertContext(context).json, JSON.stringify(context));
  assert.deepEqual(convert(context).value, {
    tags: ['a', null, 'b'],
    empty: [null, null, null],
    nested: { list: [[null, 1]] },
  });
  // biome-ignore lint/suspicious/noSparseArray: a hole before a function
  assert.equal(rejection({ list: [, () => 1] }), 'list[1]: a function is not a context value');
});

test('a Date becomes its ISO-8601 string, also nested and in arrays', () => {
  const when = new Date('2026-03-01T10:00:00.123Z');
  assert.deepEqual(convert({ when, nested: { at: [when] } }).value, {
    when: '2026-03-01T10:00:00.123Z',
    nested: { at: ['2026-03-01T10:00:00.123Z'] },
  });
});

test('a bigint within the safe integer range becomes a number, beyond it is rejected', () => {
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  assert.deepEqual(convert({ hi: max, lo: -max, small: 30n }).value, {
    hi: Number.MAX_SAFE_INTEGER,
    lo: Number.MIN_SAFE_INTEGER,
    small: 30,
  });
  for (const big of [max + 1n, -max - 1n, 2n ** 64n]) {
    assert.throws(
      () => convertContext({ n: big }),
      (e) => e instanceof InvalidContextError && e.message === `n: bigint ${big} is outside the safe integer range`,
    );
  }
});

test('arrays become lists, plain objects structs, objects with toJSON what toJSON returns', () => {
  class Money {
    toJSON() {
      return { amount: 5, currency: 'SEK' };
    }
  }
  assert.deepEqual(
    convert({
      tags: ['a', ['b']],
      user: { plan: { tier: 'gold' } },
      price: new Money(),
      site: new URL('https://x.test/p'),
    }).value,
    {
      tags: ['a', ['b']],
      user: { plan: { tier: 'gold' } },
      price: { amount: 5, currency: 'SEK' },
      site: 'https://x.test/p',
    },
  );
});

test('the same object twice is not a cycle', () => {
  const shared = { id: 1 };
  assert.deepEqual(convert({ a: shared, b: [shared, shared] }).value, { a: { id: 1 }, b: [{ id: 1 }, { id: 1 }] });
});

test('values JSON would silently mangle are rejected with InvalidContextError, naming the attribute', () => {
  const cyclic = { nested: {} };
  cyclic.nested.self = cyclic.nested;
  const looped = [];
  looped.push(looped);
  const cases = [
    [{ n: Number.NaN }, 'n: NaN is not a finite number'],
    [{ n: Number.POSITIVE_INFINITY }, 'n: Infinity is not a finite number'],
    [{ deep: { list: [1, Number.NEGATIVE_INFINITY] } }, 'deep.list[1]: -Infinity is not a finite number'],
    [{ when: new Date('nope') }, 'when: invalid Date'],
    [cyclic, 'nested.self: circular reference'],
    [{ looped }, 'looped[0]: circular reference'],
    [{ f: () => 1 }, 'f: a function is not a context value'],
    [{ s: Symbol('x') }, 's: a symbol is not a context value'],
    [{ m: new Map() }, 'm: Map is not a context value; use an array or object'],
    [{ u: { set: new Set([1]) } }, 'u.set: Set is not a context value; use an array or object'],
    [{ bytes: new Uint8Array(2) }, 'bytes: Uint8Array is not a context value; use an array or object'],
    [{ view: new DataView(new ArrayBuffer(1)) }, 'view: DataView is not a context value; use an array or object'],
    [{ raw: new ArrayBuffer(1) }, 'raw: ArrayBuffer is not a context value; use an array or object'],
    [{ targetingKey: Number.NaN }, 'targeting_key: NaN is not a finite number'],
  ];
  for (const [context, message] of cases) {
    assert.throws(
      () => convertContext(context),
      (e) => e instanceof InvalidContextError && e.message === message,
      message,
    );
  }
});

test(`up to ${MAX_DEPTH} levels of arrays and objects pass; one more is rejected, naming where`, () => {
  for (const wrap of [inObject, inArray, mixed]) {
    assert.equal(
      JSON.stringify(convert({ deep: nest(MAX_DEPTH, wrap) }).value),
      JSON.stringify({ deep: nest(MAX_DEPTH, wrap) }),
    );
  }
  const problem = `more than ${MAX_DEPTH} levels of nested arrays and objects`;
  assert.equal(rejection({ deep: nest(MAX_DEPTH + 1, inObject) }), `deep${'.d'.repeat(MAX_DEPTH)}: ${problem}`);
  assert.equal(rejection({ deep: nest(MAX_DEPTH + 1, inArray) }), `deep${'[0]'.repeat(MAX_DEPTH)}: ${problem}`);
  // A deep toJSON result counts like any other value.
  assert.equal(
    rejection({ deep: { toJSON: () => nest(MAX_DEPTH + 1, inObject) } }),
    `deep${'.d'.repeat(MAX_DEPTH)}: ${problem}`,
  );
});

test('contexts nested 100k deep are an InvalidContextError naming the attribute, not a stack overflow', () => {
  for (const wrap of [inObject, inArray, mixed]) {
    const message = rejection({ user: { plan: nest(100_000, wrap) } });
    assert.ok(message.startsWith('user.plan.d') || message.startsWith('user.plan[0]'), message);
    assert.ok(message.endsWith(`: more than ${MAX_DEPTH} levels of nested arrays and objects`), message);
    assert.ok(message.length <= ECHO_LIMIT + 100, `${message.length} characters`);
  }
});

test('toJSON is called once per value, as JSON does: a toJSON returning its own kind cannot loop', () => {
  class Loop {
    toJSON() {
      return new Loop();
    }
  }
  assert.equal(convertContext({ x: new Loop() }).json, JSON.stringify({ x: new Loop() }));
});

test('strings and keys with lone surrogates are rejected naming the attribute (the resolver cannot read them)', () => {
  assert.equal(rejection({ s: 'a\ud800b' }), 's: the string has a lone surrogate (not well-formed Unicode)');
  assert.equal(
    rejection({ u: { tags: ['ok', '\udc00'] } }),
    'u.tags[1]: the string has a lone surrogate (not well-formed Unicode)',
  );
  assert.equal(rejection({ u: { 'k\ud800': 1 } }), 'u.k\ud800: the key has a lone surrogate (not well-formed Unicode)');
  assert.equal(rejection({ 'k\ud800': 1 }), 'k\ud800: the key has a lone surrogate (not well-formed Unicode)');
  assert.equal(
    rejection({ targetingKey: '\ud800' }),
    'targeting_key: the string has a lone surrogate (not well-formed Unicode)',
  );
  assert.deepEqual(convert({ s: 'emoji 😀', '😀': 1 }).value, { s: 'emoji 😀', '😀': 1 }, 'pairs are fine');
});

test(`messages repeat at most ${ECHO_LIMIT} characters of a path or value, then an ellipsis`, () => {
  const long = 'k'.repeat(1_000_000);
  assert.equal(rejection({ [long]: Number.NaN }), `${'k'.repeat(ECHO_LIMIT)}…: NaN is not a finite number`);
  assert.equal(
    rejection({ user: { [long]: () => 1 } }),
    `user.${'k'.repeat(ECHO_LIMIT - 5)}…: a function is not a context value`,
  );
  const big = 10n ** 1000n;
  assert.equal(
    rejection({ n: big }),
    `n: bigint ${String(big).slice(0, ECHO_LIMIT)}… is outside the safe integer range`,
  );
  class AVeryLongMapName extends Map {}
  Object.defineProperty(AVeryLongMapName, 'name', { value: 'M'.repeat(10_000) });
  assert.equal(
    rejection({ m: new AVeryLongMapName() }),
    `m: ${'M'.repeat(ECHO_LIMIT)}… is not a context value; use an array or object`,
  );
});
