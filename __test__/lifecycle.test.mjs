// Many providers, many threads: several providers with different secrets in one process,
// providers inside worker_threads, and a provider created and closed in a loop. None of it may
// leave threads, sockets or memory behind. Threads and descriptors are read from /proc (Linux);
// elsewhere those assertions are skipped.
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Worker } from 'node:worker_threads';

import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { buildTestState } from 'confidence-openfeature-provider/testing';

import { startFakeConfidence } from './support/fake-confidence.mjs';

const linux = existsSync('/proc/self/task');
const threads = () => readdirSync('/proc/self/task').length;
const fds = () => readdirSync('/proc/self/fd').length;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let fake;
before(async () => {
  fake = await startFakeConfidence();
});
after(() => fake.stop());

/** A state whose one flag answers `label` for everyone, served for `secret`. */
async function serve(secret, label) {
  const state = buildTestState({
    clientSecret: secret,
    flags: { who: { variants: { only: { label } }, rules: [{ variant: 'only' }] } },
  });
  await fake.setStateBytes(secret, state, `"${label}"`);
}

const provider = (secret) =>
  new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    cdnBaseUrl: fake.baseUrl,
    apiBaseUrl: fake.baseUrl,
    stateUpdateInterval: 1000,
    flushInterval: 1000,
    initializeTimeout: 5000,
    logger: { error() {}, warn() {}, info() {}, debug() {} },
  });

async function evaluateOnce(p) {
  const details = await p.resolveStringEvaluation('who.label', 'none', { targetingKey: 'u1' });
  return details.value;
}

/**
 * Waits until `read()` is at most `bound`, or returns the last reading after `ms`. Tokio keeps
 * idle blocking-pool threads for 10 s (bounded, reused: not a leak), hence the default.
 */
async function settlesTo(read, bound, ms = 15_000) {
  const deadline = Date.now() + ms;
  let value = read();
  while (value > bound && Date.now() < deadline) {
    await sleep(50);
    value = read();
  }
  return value;
}

/** One warm-up round so the runtime's once-per-process threads exist before the baseline. */
async function warmUp() {
  await serve('warm-up', 'warm');
  const p = provider('warm-up');
  await p.initialize();
  await evaluateOnce(p);
  await p.onClose();
}

test('several providers with different secrets answer from their own states and leave nothing behind', async () => {
  await warmUp();
  const baseline = linux ? { threads: threads(), fds: fds() } : undefined;
  const secrets = ['alpha', 'beta', 'gamma', 'delta', 'epsilon'];
  for (const s of secrets) await serve(`secret-${s}`, s);
  const providers = secrets.map((s) => provider(`secret-${s}`));
  await Promise.all(providers.map((p) => p.initialize()));
  const answers = await Promise.all(providers.map(evaluateOnce));
  assert.deepEqual(answers, secrets);
  await Promise.all(providers.map((p) => p.onClose()));
  if (!linux) return;
  assert.ok((await settlesTo(threads, baseline.threads)) <= baseline.threads, 'threads back to the baseline');
  assert.ok((await settlesTo(fds, baseline.fds)) <= baseline.fds, 'descriptors back to the baseline');
});

test('providers in worker_threads work, and the workers exit cleanly without leaking', async () => {
  await warmUp();
  await serve('worker-secret', 'from-worker');
  const baseline = linux ? { threads: threads(), fds: fds() } : undefined;
  const source = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { ConfidenceServerProviderLocal } = require('confidence-openfeature-provider');
    (async () => {
      const p = new ConfidenceServerProviderLocal({
        flagClientSecret: 'worker-secret',
        cdnBaseUrl: workerData.baseUrl,
        apiBaseUrl: workerData.baseUrl,
        initializeTimeout: 5000,
        logger: { error() {}, warn() {}, info() {}, debug() {} },
      });
      await p.initialize();
      const values = [];
      for (let i = 0; i < 200; i++) {
        values.push((await p.resolveStringEvaluation('who.label', 'none', { targetingKey: 'u' + i })).value);
      }
      await p.onClose();
      parentPort.postMessage([...new Set(values)]);
    })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));
  `;
  for (let round = 0; round < 3; round++) {
    const results = await Promise.all(
      [0, 1, 2, 3].map(
        () =>
          new Promise((resolve, reject) => {
            const worker = new Worker(source, { eval: true, workerData: { baseUrl: fake.baseUrl } });
            let message;
            worker.once('message', (m) => {
              message = m;
            });
            worker.once('error', reject);
            // The worker has no timers or sockets left after close: it exits by itself.
            worker.once('exit', (code) => (code === 0 ? resolve(message) : reject(new Error(`exit ${code}`))));
          }),
      ),
    );
    for (const r of results) assert.deepEqual(r, ['from-worker']);
  }
  if (!linux) return;
  assert.ok((await settlesTo(threads, baseline.threads)) <= baseline.threads, 'worker and addon threads are gone');
  assert.ok((await settlesTo(fds, baseline.fds)) <= baseline.fds, 'descriptors back to the baseline');
});

test('a provider created, used and closed 60 times leaks no threads, sockets or memory', async (t) => {
  await warmUp();
  await serve('loop-secret', 'looped');
  const round = async () => {
    const p = provider('loop-secret');
    await p.initialize();
    for (let i = 0; i < 50; i++) assert.equal(await evaluateOnce(p), 'looped');
    await p.onClose();
  };
  for (let i = 0; i < 10; i++) await round();
  global.gc?.();
  const baseline = { rss: process.memoryUsage().rss, threads: linux ? threads() : 0, fds: linux ? fds() : 0 };
  for (let i = 0; i < 60; i++) await round();
  global.gc?.();
  const grown = process.memoryUsage().rss - baseline.rss;
  t.diagnostic(`RSS ${(baseline.rss / 2 ** 20).toFixed(1)} -> ${(process.memoryUsage().rss / 2 ** 20).toFixed(1)} MiB`);
  // Measured: a few MiB of allocator noise over 60 rounds; a leaked engine or state per round
  // (~1 MiB each) would exceed the bound.
  assert.ok(grown < 48 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB over 60 rounds`);
  if (!linux) return;
  assert.ok((await settlesTo(threads, baseline.threads)) <= baseline.threads, 'no thread per round');
  assert.ok((await settlesTo(fds, baseline.fds)) <= baseline.fds, 'no socket per round');
});
