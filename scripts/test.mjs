#!/usr/bin/env node
// `npm test`: the Rust suites (release profile, so they reuse the addon's wasmtime build),
// then Node's built-in runner over __test__/.
import { execFileSync, spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => {
  console.log(`\n> ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run('cargo', ['test', '--release', '--workspace']);
// The loopback fake Confidence the Node suites drive (crates/fake-confidence/, one implementation
// for Rust and Node tests).
run('cargo', ['build', '--release', '-p', 'fake-confidence']);
const triple = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/^host: (.+)$/m)[1];
process.env.FAKE_CONFIDENCE_BIN = join(root, 'target', triple, 'release', 'fake-confidence');
run(process.execPath, ['--test', '--test-reporter=spec', join(root, '__test__')]);
