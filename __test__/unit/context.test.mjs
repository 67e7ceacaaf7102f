// Evaluation context → resolver JSON (js/src/context.ts): every conversion its header documents,
// and every rejection naming the attribute. No addon, no server.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { convertContext, InvalidContextError } from '../../dist/cjs/context.js';

/** The converted context as an object, and whether exposure is logged. */
const convert = (context) => {
  const { json, apply } = convertContext(context);
  return { value: JSON.parse(json), apply };
};

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
