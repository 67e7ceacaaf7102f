// Baseline 3: crates/confidence-host/benches/crate_floor.rs, built with cargo (outside the measured time) and run
// as a child process on a JSON spec of the same workloads.
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

import { root, tmpDir } from './workload.mjs';

/** Builds the bench binary; returns `{ bin, seconds }` or `{ error }`. */
export function buildFloor() {
  const started = performance.now();
  const r = spawnSync(
    'cargo',
    [
      'bench',
      '-p',
      'confidence-host',
      '--bench',
      'crate_floor',
      '--no-run',
      '--message-format=json-render-diagnostics',
    ],
    {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  const seconds = (performance.now() - started) / 1000;
  if (r.status !== 0) return { error: `cargo bench --no-run failed (exit ${r.status})`, seconds };
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const m = JSON.parse(line);
    if (m.reason === 'compiler-artifact' && m.target?.name === 'crate_floor' && m.executable) {
      return { bin: m.executable, seconds };
    }
  }
  return { error: 'cargo did not report the crate_floor executable', seconds };
}

export function runFloor(bin, spec) {
  const file = `${tmpDir}floor-spec.json`;
  writeFileSync(file, JSON.stringify(spec));
  const out = execFileSync(bin, [file], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(out.trim().split('\n').pop());
}

export function floorStartup(bin, baseUrl, secret, keyHex) {
  const out = execFileSync(bin, ['--startup', baseUrl, secret, keyHex], { encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop());
}
