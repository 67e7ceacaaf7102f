// The README's "Layout" and "How it works" tables against the tree: a folder, crate or module
// that is added, moved or removed without its row fails here.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');

/** The first-column paths of the table under `heading`. */
function tablePaths(heading) {
  const start = readme.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has ${heading}`);
  const rest = readme.slice(start + heading.length + 2);
  const end = rest.search(/\n#{2,3} /);
  const section = end === -1 ? rest : rest.slice(0, end);
  return [...section.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);
}

const tracked = execFileSync('git', ['ls-files'], { cwd: root, encoding: 'utf8' }).split('\n').filter(Boolean);

test('every row of the layout table exists, and every top-level folder and crate has a row', () => {
  const rows = tablePaths('## Layout');
  for (const path of rows) assert.ok(existsSync(join(root, path)), `${path} exists`);
  const folders = new Set(tracked.filter((f) => f.includes('/') && !f.startsWith('.')).map((f) => f.split('/')[0]));
  const crates = readdirSync(join(root, 'crates')).map((c) => `crates/${c}`);
  for (const folder of [...folders].filter((f) => f !== 'crates').concat(crates)) {
    assert.ok(rows.includes(`${folder}/`), `the layout table has a row for ${folder}/`);
  }
});

test('every module of the binding and the host has a row, and every row is a module', () => {
  const rows = tablePaths('## How it works');
  for (const path of rows) assert.ok(existsSync(join(root, path)), `${path} exists`);
  // A crate's lib.rs only lists its modules; the binding's is a module of its own.
  const modules = tracked.filter(
    (f) => /^(src|crates\/confidence-(host|testkit)\/src)\/[^/]+\.rs$/.test(f) && !/^crates\/.*\/lib\.rs$/.test(f),
  );
  for (const module of modules) {
    const covered = rows.some((row) => row === module || (row.endsWith('/') && module.startsWith(row)));
    assert.ok(covered, `the module table has a row for ${module}`);
  }
  assert.ok(rows.includes('crates/confidence-host/src/engine/'), 'the engine folder has its row');
});

test('every crate says what it is in its Cargo.toml description', () => {
  const manifests = tracked.filter((f) => /(^|\/)Cargo\.toml$/.test(f));
  assert.ok(manifests.length >= 8, manifests.join(', '));
  for (const manifest of manifests) {
    const text = readFileSync(join(root, manifest), 'utf8');
    const description = /^description = "(.+)"$/m.exec(text)?.[1] ?? '';
    assert.ok(description.length > 20, `${manifest} has a description`);
  }
});
