import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { encryptedState, encryptionKey, ourWasm, secret } from './support/fixtures.mjs';

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

test("the wasm engine runs the addon's own guest with no wasm file anywhere near it", () => {
  // The addon, its loader and the package manifest alone, as a bundler would lay them out.
  const root = fileURLToPath(new URL('..', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'confidence-addon-'));
  try {
    for (const file of readdirSync(root).filter(
      (f) => f.endsWith('.node') || f === 'index.js' || f === 'package.json',
    )) {
      copyFileSync(join(root, file), join(dir, file));
    }
    // In a process of its own: a second copy of the addon cannot load beside the first.
    const script = `
      const { NativeResolver } = require(${JSON.stringify(join(dir, 'index.js'))});
      const r = new NativeResolver({
        flagClientSecret: ${JSON.stringify(secret)},
        engine: 'wasm',
        encryptionKey: ${JSON.stringify(encryptionKey)},
        offline: true,
        initialState: require('node:fs').readFileSync(${JSON.stringify(encryptedState)}),
      });
      const flag = r.evaluate('flags/tutorial-feature', JSON.stringify({ visitor_id: 'tutorial_visitor' }), false);
      console.log(JSON.stringify({ variant: flag.variant, wasm: /^confidence_resolver_instances 2$/m.test(r.metrics()) }));
    `;
    const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: dir, encoding: 'utf8' }));
    assert.deepEqual(out, { variant: 'flags/tutorial-feature/variants/exciting-welcome', wasm: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
