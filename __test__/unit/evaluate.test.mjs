// One resolved flag → OpenFeature details (js/src/evaluate.ts): flag keys and dot paths, type
// checks against the caller's default, reasons, error codes, telemetry reasons, bounded messages.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode } from '@openfeature/server-sdk';

import {
  confidenceReason,
  ECHO_LIMIT,
  echo,
  failure,
  openFeatureReason,
  parseFlagKey,
  TELEMETRY_REASON,
  toDetails,
} from '../../dist/cjs/evaluate.js';

const metadata = { stateEtag: '"e1"' };

/** A resolved flag as the addon returns it. */
const flag = (value, { reason = 'RESOLVE_REASON_MATCH', variant = 'flags/f/variants/v' } = {}) => ({
  flag: 'flags/f',
  variant: value === undefined ? '' : variant,
  reason,
  valueJson: value === undefined ? undefined : JSON.stringify(value),
  shouldApply: true,
  assignmentOrigin: 'rule-1',
});

/** `toDetails` for the flag key `key`; fails the test when the key does not parse. */
const details = (key, resolved, defaultValue, type) => {
  const parsed = parseFlagKey(key);
  assert.ok(parsed, key);
  return toDetails(parsed, resolved, defaultValue, type, metadata);
};

test('flag keys: a name, then an optional dot path; empty parts and non-strings are PARSE_ERROR keys', () => {
  assert.deepEqual(parseFlagKey('f'), { name: 'f', path: [] });
  assert.deepEqual(parseFlagKey('f.a.b'), { name: 'f', path: ['a', 'b'] });
  for (const bad of ['', '.a', 'f.', 'f..a', '.', undefined, null, 42]) {
    assert.equal(parseFlagKey(bad), undefined, JSON.stringify(bad));
  }
});

test("Confidence's reasons map to OpenFeature's as in the README's table", () => {
  assert.equal(confidenceReason('RESOLVE_REASON_NO_SEGMENT_MATCH'), 'NO_SEGMENT_MATCH');
  assert.equal(confidenceReason('MATCH'), 'MATCH');
  const table = {
    MATCH: 'TARGETING_MATCH',
    NO_SEGMENT_MATCH: 'DEFAULT',
    NO_TREATMENT_MATCH: 'DEFAULT',
    FLAG_ARCHIVED: 'DISABLED',
    TARGETING_KEY_ERROR: 'ERROR',
    ERROR: 'ERROR',
    MATERIALIZATION_NOT_SUPPORTED: 'ERROR',
    UNSPECIFIED: 'UNKNOWN',
    SOMETHING_NEW: 'UNKNOWN',
  };
  for (const [ours, theirs] of Object.entries(table)) assert.equal(openFeatureReason(ours), theirs, ours);
});

test('a match: the value at the dot path, the variant, TARGETING_MATCH and the flag metadata', () => {
  const resolved = flag({ title: 'Hi', nested: { n: 3, on: true }, list: [1] });
  assert.deepEqual(details('f.nested.n', resolved, 0, 'number'), {
    details: {
      value: 3,
      variant: 'flags/f/variants/v',
      reason: 'TARGETING_MATCH',
      flagMetadata: { stateEtag: '"e1"', confidenceReason: 'MATCH', assignmentOrigin: 'rule-1', shouldApply: true },
    },
    telemetry: TELEMETRY_REASON.MATCH,
  });
  assert.equal(details('f.title', resolved, '', 'string').details.value, 'Hi');
  assert.equal(details('f.nested.on', resolved, false, 'boolean').details.value, true);
  assert.deepEqual(details('f', resolved, {}, 'object').details.value, JSON.parse(resolved.valueJson));
  assert.deepEqual(details('f.list', resolved, null, 'object').details.value, [1], 'a null default takes any value');
});

test('no variant assigned (or a null field): the default value with Confidence’s reason, no error', () => {
  const none = details('f.title', flag(undefined, { reason: 'RESOLVE_REASON_NO_SEGMENT_MATCH' }), 'fallback', 'string');
  assert.deepEqual(
    [none.details.value, none.details.reason, none.details.errorCode, none.details.flagMetadata.confidenceReason],
    ['fallback', 'DEFAULT', undefined, 'NO_SEGMENT_MATCH'],
  );
  assert.equal(none.telemetry, TELEMETRY_REASON.NO_SEGMENT_MATCH);
  const archived = details('f', flag(undefined, { reason: 'RESOLVE_REASON_FLAG_ARCHIVED' }), { a: 1 }, 'object');
  assert.deepEqual([archived.details.value, archived.details.reason], [{ a: 1 }, 'DISABLED']);
  const nulled = details('f.title', flag({ title: null }), 'fallback', 'string');
  assert.deepEqual([nulled.details.value, nulled.details.errorCode], ['fallback', undefined]);
});

test('type mismatches are TYPE_MISMATCH with the default value and where it happened', () => {
  const resolved = flag({ title: 'Hi', nested: { n: 3 }, list: [1] });
  const cases = [
    ['f.title', 7, 'number', "resolved value (string) isn't assignable to default type (number) at f.title"],
    ['f.nested', 'd', 'string', "resolved value (object) isn't assignable to default type (string) at f.nested"],
    ['f.title.deeper', 'd', 'string', 'resolved value is not an object at f.title'],
    ['f.list.x', 'd', 'string', 'resolved value is not an object at f.list'],
    ['f.missing', 'd', 'string', "resolved value (undefined) isn't assignable to default type (string) at f.missing"],
    ['f', [], 'object', 'arrays are not supported as default values (at f)'],
    ['f.list', {}, 'object', "resolved value (array) isn't assignable to default type (object) at f.list"],
    ['f', { absent: 1 }, 'object', 'resolved value is missing field "absent" at f'],
    [
      'f',
      { nested: { n: 'x' } },
      'object',
      "resolved value (number) isn't assignable to default type (string) at f.nested.n",
    ],
  ];
  for (const [key, defaultValue, type, message] of cases) {
    const { details: d, telemetry } = details(key, resolved, defaultValue, type);
    assert.deepEqual(
      [d.value, d.reason, d.errorCode, d.errorMessage],
      [defaultValue, 'ERROR', ErrorCode.TYPE_MISMATCH, message],
      key,
    );
    assert.equal(d.flagMetadata.confidenceReason, 'MATCH', key);
    assert.equal(telemetry, TELEMETRY_REASON.TYPE_MISMATCH, key);
  }
  // An object default only checks the fields it names; a null default accepts anything.
  assert.equal(details('f', resolved, { title: 'x' }, 'object').details.errorCode, undefined);
  assert.equal(details('f.list', resolved, null, 'object').details.errorCode, undefined);
});

test('an absent flag is FLAG_NOT_FOUND; resolver-side failures keep their own codes', () => {
  const missing = details('gone.x', undefined, true, 'boolean');
  assert.deepEqual(missing, {
    details: {
      value: true,
      reason: 'ERROR',
      errorCode: ErrorCode.FLAG_NOT_FOUND,
      errorMessage: "Flag 'gone' was not found (unknown, archived, or not enabled for this client)",
      flagMetadata: metadata,
    },
    telemetry: TELEMETRY_REASON.FLAG_NOT_FOUND,
  });
  const sticky = details(
    'f.x',
    flag(undefined, { reason: 'RESOLVE_REASON_MATERIALIZATION_NOT_SUPPORTED' }),
    1,
    'number',
  );
  assert.deepEqual(
    [sticky.details.errorCode, sticky.details.errorMessage, sticky.telemetry],
    [
      ErrorCode.GENERAL,
      "Flag 'f' requires materializations. Configure a materialization store.",
      TELEMETRY_REASON.MATERIALIZATION_NOT_SUPPORTED,
    ],
  );
  const keyless = details('f.x', flag(undefined, { reason: 'RESOLVE_REASON_TARGETING_KEY_ERROR' }), 1, 'number');
  assert.equal(keyless.details.errorCode, ErrorCode.TARGETING_KEY_MISSING);
  assert.match(keyless.details.errorMessage, /^Flag 'f' needs a targeting key/);
  assert.equal(keyless.telemetry, TELEMETRY_REASON.TARGETING_KEY_ERROR);
  assert.equal(details('f', flag({}, { reason: 'RESOLVE_REASON_UNSPECIFIED' }), {}, 'object').telemetry, 0);
});

test('failure() is the default value with reason ERROR, the code and the message', () => {
  assert.deepEqual(failure('d', ErrorCode.GENERAL, 'broken'), {
    value: 'd',
    reason: 'ERROR',
    errorCode: ErrorCode.GENERAL,
    errorMessage: 'broken',
    flagMetadata: undefined,
  });
});

test(`echo() keeps at most ${ECHO_LIMIT} characters of caller input, then an ellipsis`, () => {
  assert.equal(echo('f'), 'f');
  assert.equal(echo('x'.repeat(ECHO_LIMIT)), 'x'.repeat(ECHO_LIMIT));
  assert.equal(echo('x'.repeat(ECHO_LIMIT + 1)), `${'x'.repeat(ECHO_LIMIT)}…`);
  assert.equal(echo('x'.repeat(1_000_000)), `${'x'.repeat(ECHO_LIMIT)}…`);
  // A surrogate pair straddling the cut is dropped whole, never halved.
  assert.equal(echo(`${'x'.repeat(ECHO_LIMIT - 1)}😀y`), `${'x'.repeat(ECHO_LIMIT - 1)}…`);
  assert.equal(echo(undefined), 'undefined');
  assert.equal(echo(10n ** 300n), `${String(10n ** 300n).slice(0, ECHO_LIMIT)}…`);
});

test('messages that repeat a flag key or a path into the value are bounded', () => {
  const long = 'x'.repeat(1_000_000);
  const cut = `${'x'.repeat(ECHO_LIMIT)}…`;
  const messages = [
    [
      details(long, undefined, true, 'boolean'),
      `Flag '${cut}' was not found (unknown, archived, or not enabled for this client)`,
    ],
    [
      details(`f.${long}`, flag({ title: 'Hi' }), 'd', 'string'),
      `resolved value (undefined) isn't assignable to default type (string) at f.${'x'.repeat(ECHO_LIMIT - 2)}…`,
    ],
    [details(`f.title.${long}`, flag({ title: 'Hi' }), 'd', 'string'), 'resolved value is not an object at f.title'],
    [
      details(`f.${long}.y`, flag({ [long]: 1 }), 'd', 'string'),
      `resolved value is not an object at f.${'x'.repeat(ECHO_LIMIT - 2)}…`,
    ],
    [details('f', flag({ title: 'Hi' }), { [long]: 1 }, 'object'), `resolved value is missing field "${cut}" at f`],
    [
      details(long, flag(undefined, { reason: 'RESOLVE_REASON_MATERIALIZATION_NOT_SUPPORTED' }), 1, 'number'),
      `Flag '${cut}' requires materializations. Configure a materialization store.`,
    ],
  ];
  for (const [{ details: d }, message] of messages) assert.equal(d.errorMessage, message);
  const keyless = details(long, flag(undefined, { reason: 'RESOLVE_REASON_TARGETING_KEY_ERROR' }), 1, 'number');
  assert.ok(keyless.details.errorMessage.startsWith(`Flag '${cut}' needs a targeting key`));
  assert.ok(keyless.details.errorMessage.length < ECHO_LIMIT + 150);
});
