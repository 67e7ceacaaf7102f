// `node bench/many-flags.mjs`: what a single-flag evaluation costs on a state with many flags,
// as a ratio to a one-flag state, in the same run (the README's "Limits" quotes it). The
// pinned resolver scans every flag of the state on each request, so the cost grows with the
// state's size even when one flag is asked for.
import { performance } from 'node:perf_hooks';

import { createTestProvider } from 'confidence-openfeature-provider/testing';

const sizes = [1, 1000, 5000, 10_000];
const ROUNDS = 5;
const PER_ROUND = 20_000;

function describe(n) {
  const flags = {};
  for (let i = 0; i < n; i++) flags[`flag-${i}`] = { variants: { on: { enabled: true } }, rules: [{ variant: 'on' }] };
  return { flags };
}

const results = [];
for (const n of sizes) {
  const provider = createTestProvider(describe(n));
  await provider.initialize();
  const ctx = { targetingKey: 'user-1' };
  for (let i = 0; i < 2000; i++) provider.evaluateBoolean('flag-0.enabled', false, ctx);
  const perEval = [];
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    for (let i = 0; i < PER_ROUND; i++) provider.evaluateBoolean('flag-0.enabled', false, ctx);
    perEval.push(((performance.now() - start) * 1000) / PER_ROUND);
  }
  perEval.sort((a, b) => a - b);
  results.push({ flags: n, medianUs: perEval[Math.floor(ROUNDS / 2)] });
  await provider.onClose();
}
const base = results[0].medianUs;
console.log('flags in state   µs per evaluation (median of rounds)   ratio to 1 flag');
for (const { flags, medianUs } of results) {
  console.log(
    `${String(flags).padStart(14)}   ${medianUs.toFixed(1).padStart(36)}   ${(medianUs / base).toFixed(1).padStart(15)}`,
  );
}
