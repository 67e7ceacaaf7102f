#!/usr/bin/env node
// `npm install` / `npm run build`: everything a fresh clone needs, in order.
//   1. scripts/setup.mjs  — wasm32 target and the vendored protoc (no system packages)
//   2. the guest          — wasm/ → wasm/confidence_resolver.wasm (release, size-optimised)
//   3. the addon          — napi build --platform --release (index.js, index.d.ts, *.node)
//   4. the provider       — js/ → dist/ (scripts/build-js.mjs)
import { execFileSync } from 'node:child_process';
import { copyFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const step = (title, cmd, args, env = {}) => {
  console.log(`\n> ${title}: ${cmd} ${args.join(' ')}`);
  execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
};
const bin = (name) => join(root, 'node_modules', '.bin', name);

step('setup', process.execPath, [join(root, 'scripts', 'setup.mjs')]);

// Paths baked into the guest (panic locations) are made relative, so the same sources give the
// same bytes in any checkout. Only the wasm target gets these flags: host build scripts keep
// theirs and stay shared with the addon build.
const cargoHome = process.env.CARGO_HOME ?? join(homedir(), '.cargo');
step('guest', 'cargo', ['build', '-p', 'confidence-guest', '--target', 'wasm32-unknown-unknown', '--profile', 'wasm'], {
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS: `--remap-path-prefix=${root}=. --remap-path-prefix=${cargoHome}=cargo`,
});
const built = join(root, 'target', 'wasm32-unknown-unknown', 'wasm', 'confidence_guest.wasm');
const out = join(root, 'wasm', 'confidence_resolver.wasm');
// Binaryen shaves ~20 % off; the features are the ones rustc enables for wasm32 by default.
const features = [
  'bulk-memory',
  'sign-ext',
  'nontrapping-float-to-int',
  'mutable-globals',
  'reference-types',
  'multivalue',
];
try {
  step('guest size', bin('wasm-opt'), [
    '-Oz',
    '--strip-debug',
    '--strip-producers',
    ...features.map((f) => `--enable-${f}`),
    built,
    '-o',
    out,
  ]);
} catch (e) {
  console.warn(`wasm-opt failed (${e.message}); shipping the unoptimised guest`);
  copyFileSync(built, out);
}
console.log(`guest: ${out} (${statSync(out).size} bytes)`);

step('addon', bin('napi'), ['build', '--platform', '--release']);
step('provider', process.execPath, [join(root, 'scripts', 'build-js.mjs')]);
