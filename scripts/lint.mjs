#!/usr/bin/env node
// `npm run lint` checks, `npm run format` (`--fix`) rewrites: rustfmt and clippy for Rust,
// Biome (one tool for lint and format) for TypeScript and JavaScript.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fix = process.argv.includes('--fix');
let failed = false;
const run = (cmd, args) => {
  console.log(`\n> ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) failed = true;
};

run('cargo', ['fmt', '--all', ...(fix ? [] : ['--check'])]);
// Release profile: shares the build cache with `npm install` and `npm test`.
run('cargo', [
  'clippy',
  '--workspace',
  '--all-targets',
  '--release',
  ...(fix ? ['--fix', '--allow-dirty'] : []),
  '--',
  '-D',
  'warnings',
]);
run(join(root, 'node_modules', '.bin', 'biome'), ['check', ...(fix ? ['--write'] : [])]);
process.exit(failed ? 1 : 0);
