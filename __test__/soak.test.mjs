// The 20-second soak (`npm run soak` runs 3 minutes): full-speed evaluations, a new state every
// 200 ms, CDN and log faults on a schedule, then close(). The child must end by itself (it never
// calls process.exit) with every log batch accounted for; being killed here means something kept
// the process alive after close.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { exitOf } from './support/wait.mjs';

const script = fileURLToPath(new URL('../scripts/soak.mjs', import.meta.url));
const TIMEOUT_MS = 60_000;

test('a 20 s soak under faults loses no log, keeps RSS flat and exits by itself', async (t) => {
  const child = spawn(process.execPath, [script, '--duration', '20', '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const code = await exitOf(child, TIMEOUT_MS);
  const report = JSON.parse(out.trim().split('\n').at(-1));
  t.diagnostic(JSON.stringify(report));
  assert.deepEqual(report.failures, []);
  assert.equal(code, 0);
  assert.ok(report.evaluations > 10_000, `evaluations: ${report.evaluations}`);
  assert.ok(report.swapsServed >= 80, `states served: ${report.swapsServed}`);
  assert.ok(report.statesApplied >= 5, `states applied: ${report.statesApplied}`);
  assert.ok(report.faults.injected >= 10, `faults: ${report.faults.injected}`);
  const { produced, delivered, dropped, pending } = report.logs;
  assert.ok(produced > 0, 'no log batch produced');
  assert.equal(produced, delivered + dropped);
  assert.equal(pending, 0);
});
