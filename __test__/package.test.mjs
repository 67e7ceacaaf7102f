// What users install: `npm pack`, installed into an empty project with no network (the peer
// dependencies are packed from this checkout's node_modules, so no registry metadata is needed
// and an empty npm cache works), where TypeScript files importing the package as ESM and as CommonJS type-check
// with `tsc --strict` and evaluate a flag offline, and `moduleResolution: node10` finds the typings
// of every entry.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
/** Runs a command; a failure carries its output, not just its status. */
const sh = (cmd, args, cwd) => {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: 'pipe' });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${e.stdout}${e.stderr}`);
  }
};

const esm = `import { OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal, type ProviderOptions } from 'confidence-openfeature-provider';
import { buildTestState } from 'confidence-openfeature-provider/testing';

const options: ProviderOptions = {
  flagClientSecret: 'secret',
  offline: true,
  initialState: buildTestState({ clientSecret: 'secret', flags: { greeting: { variants: { hi: { text: 'hello from esm' } }, rules: [{ variant: 'hi' }] } } }),
};
await OpenFeature.setProviderAndWait(new ConfidenceServerProviderLocal(options));
const text: string = await OpenFeature.getClient().getStringValue('greeting.text', 'default', { targetingKey: 'u' });
console.log(text);
await OpenFeature.close();
`;

const cjs = `import { OpenFeature } from '@openfeature/server-sdk';
import provider = require('confidence-openfeature-provider');
import testing = require('confidence-openfeature-provider/testing');

async function main(): Promise<void> {
  const p = testing.createTestProvider({ flags: { limit: { variants: { v: { n: 42 } }, rules: [{ variant: 'v' }] } } });
  const typed: provider.ConfidenceServerProviderLocal = p;
  await OpenFeature.setProviderAndWait(typed);
  const n: number = await OpenFeature.getClient().getNumberValue('limit.n', 0, { targetingKey: 'u' });
  console.log(n);
  await OpenFeature.close();
}
main();
`;

const node10 = `import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { createTestProvider } from 'confidence-openfeature-provider/testing';
import { NativeResolver } from 'confidence-openfeature-provider/native';
import * as node from 'confidence-openfeature-provider/node';

const p: ConfidenceServerProviderLocal = createTestProvider({ flags: {} });
const n: typeof NativeResolver = NativeResolver;
const same: typeof ConfidenceServerProviderLocal = node.ConfidenceServerProviderLocal;
export { p, n, same };
`;

test('npm pack installs into an empty project where ESM and CJS TypeScript type-check strictly and evaluate', {
  timeout: 300_000,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'confidence-pack-'));
  try {
    const packed = sh(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], root);
    const [{ filename, files }] = JSON.parse(packed);
    const names = files.map((f) => f.path);
    for (const needed of [
      'wasm/confidence_resolver.wasm',
      'index.js',
      'index.d.ts',
      'dist/cjs/index.js',
      'dist/esm/index.mjs',
      'dist/cjs/testing.d.ts',
    ]) {
      assert.ok(names.includes(needed), `the tarball has ${needed}`);
    }
    assert.ok(
      names.some((n) => n.endsWith('.node')),
      'the tarball has the addon',
    );
    assert.ok(!names.some((n) => n.startsWith('src/') || n.startsWith('target/')), 'no sources or build output');

    const app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const deps = ['@openfeature/server-sdk', '@openfeature/core', '@types/node', 'undici-types'].map((n) => {
      const [{ filename: tarball }] = JSON.parse(
        sh(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir, join(root, 'node_modules', n)], root),
      );
      return join(dir, tarball);
    });
    sh(npm, ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', join(dir, filename), ...deps], app);
    writeFileSync(join(app, 'esm.mts'), esm);
    writeFileSync(join(app, 'cjs.cts'), cjs);
    const tsconfig = {
      compilerOptions: {
        strict: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        target: 'es2022',
        outDir: 'out',
        rootDir: '.',
        types: ['node'],
      },
      files: ['esm.mts', 'cjs.cts'],
    };
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify(tsconfig));
    sh(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app);
    assert.equal(sh(process.execPath, [join(app, 'out', 'esm.mjs')], app).trim(), 'hello from esm');
    assert.equal(sh(process.execPath, [join(app, 'out', 'cjs.cjs')], app).trim(), '42');

    // TypeScript's older `node10` resolution ignores `exports`: `typesVersions` finds the subpaths.
    const legacy = join(app, 'legacy');
    mkdirSync(legacy);
    writeFileSync(join(legacy, 'legacy.ts'), node10);
    const legacyConfig = {
      compilerOptions: { strict: true, module: 'commonjs', moduleResolution: 'node10', target: 'es2022', noEmit: true },
      files: ['legacy.ts'],
    };
    writeFileSync(join(legacy, 'tsconfig.json'), JSON.stringify(legacyConfig));
    sh(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', legacy], legacy);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
