import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';

import { ourWasm } from './support/fixtures.mjs';

const require = createRequire(import.meta.url);
const addon = require('../index.js');

test('the addon names the resolver crate it pins', () => {
  assert.equal(addon.resolverCrateVersion(), '0.26.1');
});

test('our guest passes module validation with every export of the ABI', () => {
  const exports = addon.validateResolverModule(readFileSync(ourWasm));
  for (const name of [
    'set_resolver_state',
    'resolve_flags',
    'apply_flags',
    'bounded_flush_logs',
    'bounded_flush_assign',
    'register_resolve',
    'prometheus_snapshot',
    'init_thread',
    'flush_logs',
  ]) {
    assert.ok(exports.includes(`wasm_msg_guest_${name}`), `missing ${name}`);
  }
});

test('a file that is not wasm is a readable error, not a crash', () => {
  assert.throws(
    () => addon.validateResolverModule(Buffer.from('#!/bin/sh\necho not wasm\n')),
    (e) => {
      assert.equal(e.code, 'INVALID_MODULE');
      assert.match(e.message, /not a usable wasm module/);
      return true;
    },
  );
});

test('a wasm module without the resolver exports is rejected by name', () => {
  // (module (memory (export "memory") 1))
  const tiny = Buffer.from('0061736d01000000' + '0503010001' + '070a01066d656d6f72790200', 'hex');
  assert.throws(() => addon.validateResolverModule(tiny), /missing export `wasm_msg_alloc`/);
});
