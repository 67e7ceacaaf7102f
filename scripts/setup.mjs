#!/usr/bin/env node
// Prepares a fresh clone for cargo: adds the wasm32 target when missing and writes the
// machine-specific `.cargo/config.toml` (git-ignored) that points the resolver crate's build
// script at the protoc binary vendored in the `protoc-bin-vendored` crate. After this, plain
// `cargo build` / `cargo test` work without any system protobuf compiler.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 });

function ensureWasmTarget() {
  const installed = run('rustup', ['target', 'list', '--installed']).split('\n');
  if (!installed.includes('wasm32-unknown-unknown')) {
    console.log('setup: adding rustup target wasm32-unknown-unknown');
    execFileSync('rustup', ['target', 'add', 'wasm32-unknown-unknown'], { cwd: root, stdio: 'inherit' });
  }
}

function hostTriple() {
  const line = run('rustc', ['-vV'])
    .split('\n')
    .find((l) => l.startsWith('host: '));
  if (!line) throw new Error('setup: cannot read the host triple from `rustc -vV`');
  return line.slice('host: '.length).trim();
}

/** The `protoc-bin-vendored-*` crate that carries the binary for this host. */
function protocCrateFor(triple) {
  const [arch] = triple.split('-');
  if (triple.includes('windows')) return 'protoc-bin-vendored-win32';
  const os = triple.includes('apple') ? 'macos' : 'linux';
  const cpu = { x86_64: 'x86_64', aarch64: 'aarch_64', i686: 'x86_32', powerpc64le: 'ppcle_64', s390x: 's390_64' }[
    arch
  ];
  if (!cpu) throw new Error(`setup: protoc-bin-vendored has no binary for ${triple}`);
  return `protoc-bin-vendored-${os}-${cpu}`;
}

function packageDirs() {
  const triple = hostTriple();
  const meta = JSON.parse(run('cargo', ['metadata', '--format-version', '1', '--filter-platform', triple]));
  const dirOf = (pred) => {
    const pkg = meta.packages.find(pred);
    return pkg ? dirname(pkg.manifest_path) : undefined;
  };
  const protocName = protocCrateFor(triple);
  const protocDir = dirOf((p) => p.name === protocName);
  const resolverDir = dirOf((p) => p.name === 'confidence_resolver');
  if (!protocDir) throw new Error(`setup: ${protocName} is not in the dependency graph`);
  if (!resolverDir) throw new Error('setup: confidence_resolver is not in the dependency graph');
  return { protocDir, resolverDir };
}

ensureWasmTarget();
const { protocDir, resolverDir } = packageDirs();
const protoc = join(protocDir, 'bin', process.platform === 'win32' ? 'protoc.exe' : 'protoc');
if (!existsSync(protoc)) throw new Error(`setup: ${protoc} does not exist`);
if (process.platform !== 'win32') chmodSync(protoc, 0o755);

mkdirSync(join(root, '.cargo'), { recursive: true });
const toml = (s) => JSON.stringify(s);
writeFileSync(
  join(root, '.cargo', 'config.toml'),
  [
    '# Written by scripts/setup.mjs for this machine; not committed.',
    '[env]',
    `PROTOC = ${toml(protoc)}`,
    `CONFIDENCE_RESOLVER_PROTOS = ${toml(join(resolverDir, 'protos'))}`,
    '',
    '# napi builds with an explicit --target; building everything for that same triple lets',
    '# `cargo test` reuse the addon build (wasmtime compiles once).',
    '[build]',
    `target = ${toml(hostTriple())}`,
    '',
  ].join('\n'),
);
console.log(`setup: PROTOC=${protoc}`);
