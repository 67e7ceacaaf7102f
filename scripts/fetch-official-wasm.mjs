#!/usr/bin/env node
// Downloads Confidence's released resolver (inside the PyPI package
// `confidence-openfeature-provider`) into vendor/official/ (git-ignored; never commit it),
// for the differential tests and benchmarks. Prints the path to export as
// CONFIDENCE_OFFICIAL_WASM.
//
//   node scripts/fetch-official-wasm.mjs [version]     (default 0.15.3)
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const version = process.argv[2] ?? '0.15.3';
const outDir = join(root, 'vendor', 'official', version);
const out = join(outDir, 'confidence_resolver.wasm');

if (!existsSync(out)) {
  const python = process.env.PYTHON ?? 'python3';
  const tmp = mkdtempSync(join(tmpdir(), 'confidence-wheel-'));
  try {
    execFileSync(
      python,
      ['-m', 'pip', 'download', '--no-deps', '--quiet', '-d', tmp, `confidence-openfeature-provider==${version}`],
      { stdio: 'inherit' },
    );
    const wheel = readdirSync(tmp).find((f) => f.endsWith('.whl'));
    if (!wheel) throw new Error(`no wheel for confidence-openfeature-provider ${version}`);
    mkdirSync(outDir, { recursive: true });
    const extract = [
      'import sys, zipfile',
      'z = zipfile.ZipFile(sys.argv[1])',
      "name = next(n for n in z.namelist() if n.endswith('confidence/wasm/confidence_resolver.wasm'))",
      "open(sys.argv[2], 'wb').write(z.read(name))",
    ].join('\n');
    execFileSync(python, ['-c', extract, join(tmp, wheel), out], { stdio: 'inherit' });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
console.log(out);
