// The 20-second soak (`npm run soak` runs 3 minutes): full-speed evaluations, states changing
// every 200 ms, CDN and log faults on a schedule, then close. The child must exit by itself
// with every log batch accounted for; a timeout here means something kept the process alive.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const script = join(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'soak.mjs');

test('a 20 s soak under faults loses no log, leaks no memory and exits by itself', async (t) => {
  const child = spawn(process.execPath, ['--expose-gc', script, '--duration', '20', '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (chunk) => {
    out += chunk;
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const [code, signal] = await new Promise((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  clearTimeout(killer);
  assert.equal(signal, null, 'the soak exited by itself (not killed after 90 s)');
  const report = JSON.parse(out.trim().split('\n').at(-1));
  t.diagnostic(JSON.stringify(report));
  assert.deepEqual(report.failures, []);
  assert.equal(code, 0);
  assert.ok(report.evaluations > 10_000, `evaluations: ${report.evaluations}`);
  assert.ok(report.swapsServed >= 50 && report.statesApplied >= 2, JSON.stringify(report));
  assert.ok(report.faultsInjected >= 5, `faults: ${report.faultsInjected}`);
  const { produced, delivered, dropped, pending } = report.logs;
  assert.ok(produced > 0);
  assert.equal(produced, delivered + dropped);
  assert.equal(pending, 0);
});
