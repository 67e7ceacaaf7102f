// `npm run bench [-- --quick] [-- --update-results] [-- --only bool,swap,...]`
//
// Measures what users feel and prints ratios against baselines measured in the same run (the
// machine is shared and noisy: absolute times drift, ratios hold). Baselines: (0) a constant
// provider through the same OpenFeature client, (1) the guest in V8's WebAssembly through a host
// shaped like Confidence's official Node provider (bench/v8-host.mjs; Confidence's released
// binary when CONFIDENCE_OFFICIAL_WASM is set), (2) our wasm engine, (3) the resolver crate
// called natively (crates/confidence-host/benches/crate_floor.rs). Results: bench/results/latest.json (+ history/).
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';

import { OpenFeature } from '@openfeature/server-sdk';

import { buildEngines, bulkContenders, closeEngines, OUR_WASM, singleFlagContenders } from './lib/contenders.mjs';
import { startFake } from './lib/fake-cdn.mjs';
import { buildFloor, floorStartup, runFloor } from './lib/floor.mjs';
import { measure } from './lib/harness.mjs';
import { swapWorkload } from './lib/swap.mjs';
import { ENCRYPTION_KEY, FIXTURE_SECRET, KIT_SECRET, prepareStates, root } from './lib/workload.mjs';

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const UPDATE_RESULTS = argv.includes('--update-results');
const onlyArg = argv.find((a) => a.startsWith('--only='))?.slice(7) ?? argv[argv.indexOf('--only') + 1];
const ONLY = argv.some((a) => a.startsWith('--only')) ? new Set(onlyArg.split(',')) : null;
const wanted = (group) => !ONLY || ONLY.has(group);

if (argv.includes('--help')) {
  console.log(
    'usage: npm run bench [-- --quick] [--update-results] [--only=bool,object,bulk,ctx,keys,swap,memory,startup]',
  );
  process.exit(0);
}
const MODE = QUICK ? 'quick' : 'full';
const CFG = QUICK
  ? { rounds: 3, roundMs: 40, warmMs: 60, swapPhaseMs: 1000, memEvals: 30_000, memSwaps: 100, startupReps: 3 }
  : { rounds: 5, roundMs: 150, warmMs: 200, swapPhaseMs: 4000, memEvals: 1_000_000, memSwaps: 1000, startupReps: 8 };
const CTX_SIZES = QUICK ? [2, 50] : [2, 10, 50];
const KEY_SIZES = QUICK ? [1] : [1, 1_000_000];
const SWAP_PERIOD_MS = 100;

const officialWasm = process.env.CONFIDENCE_OFFICIAL_WASM;
const v8Wasm = officialWasm ? resolve(officialWasm) : OUR_WASM;
const v8Label = officialWasm ? "Confidence's released wasm" : 'our wasm';
const t0 = performance.now();
const log = (s = '') => process.stdout.write(`${s}\n`);
const secs = (from) => ((performance.now() - from) / 1000).toFixed(1);

// ---- set-up ---------------------------------------------------------------------------------

log(
  `npm run bench${QUICK ? ' -- --quick' : ''}: ${MODE} mode, node ${process.version}, ${cpus().length} cores, load ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
);
log(`V8-wasm baseline runs ${v8Label} (${v8Wasm.replace(root, '')})`);
if (!officialWasm)
  log('  (set CONFIDENCE_OFFICIAL_WASM=vendor/official/0.15.3/confidence_resolver.wasm for the released binary)');

const floorBuild = buildFloor();
if (floorBuild.error) log(`crate floor skipped: ${floorBuild.error}`);
else
  log(
    `crate floor binary ready (cargo bench --no-run: ${floorBuild.seconds.toFixed(1)} s, not part of the measurement)`,
  );

const measureStart = performance.now();
const { states, files } = prepareStates();
const fake = await startFake();

const results = { workloads: {}, swap: null, memory: null, startup: null };
const phases = {};
const checks = {};

// ---- throughput workloads -------------------------------------------------------------------

const WORKLOADS = [
  {
    id: 'bool',
    group: 'bool',
    title: 'boolean flag (fallthrough-test-2.enabled) · 6 attributes · 100k keys',
    state: 'fixture',
    flagKey: 'fallthrough-test-2.enabled',
    defaultValue: false,
    context: 'reference',
    keys: 100_000,
  },
  {
    id: 'object',
    group: 'object',
    title: 'object flag, dot path (checkout.theme) · 6 attributes · 100k keys',
    state: 'kit',
    flagKey: 'checkout.theme',
    defaultValue: {},
    type: 'object',
    context: 'reference',
    keys: 100_000,
  },
  {
    id: 'bulk',
    group: 'bulk',
    title: "bulk resolve: all 3 of the client's flags · 6 attributes · 100k keys",
    state: 'fixture',
    bulk: true,
    context: 'reference',
    keys: 100_000,
  },
  ...CTX_SIZES.map((n) => ({
    id: `ctx-${n}`,
    group: 'ctx',
    title: `context of ${n} attributes (wide-context.enabled) · 100k keys`,
    state: 'kit',
    flagKey: 'wide-context.enabled',
    defaultValue: false,
    context: 'wide',
    attrs: n,
    keys: 100_000,
  })),
  ...KEY_SIZES.map((n) => ({
    id: `keys-${n}`,
    group: 'keys',
    title: `${n.toLocaleString('en')} distinct targeting key${n > 1 ? 's' : ''} (fallthrough-test-2.enabled) · 6 attributes`,
    state: 'fixture',
    flagKey: 'fallthrough-test-2.enabled',
    defaultValue: false,
    context: 'reference',
    keys: n,
    paths: ['of', 'direct', 'class'],
  })),
].filter((w) => wanted(w.group));

const secretOf = (w) => (w.state === 'kit' ? KIT_SECRET : FIXTURE_SECRET);
const canonical = (v) =>
  v !== null && typeof v === 'object'
    ? `{${Object.keys(v)
        .sort()
        .map((k) => `${k}:${canonical(v[k])}`)
        .join(',')}}`
    : JSON.stringify(v);

if (WORKLOADS.length) {
  const engines = {
    fixture: await buildEngines({ state: states.fixture, secret: FIXTURE_SECRET, v8Wasm }),
    kit: await buildEngines({ state: states.kit, secret: KIT_SECRET, v8Wasm }),
  };
  log(`\nthroughput: ${CFG.rounds} alternating rounds of ~${CFG.roundMs} ms per contender (+ as many timed per op)`);
  for (const w of WORKLOADS) {
    const started = performance.now();
    const e = engines[w.state];
    const contenders = w.bulk ? bulkContenders(e, w) : singleFlagContenders(e, w, w.paths);
    // Same answers from everyone on the first 200 contexts, or the comparison means nothing.
    if (!w.bulk) {
      const seen = {};
      for (const c of contenders.filter((c) => c.ref !== 'ceiling')) {
        const values = [];
        for (let i = 0; i < 200; i++) values.push(await c.op(i));
        seen[c.name] = { key: values.map(canonical).join('|'), trues: values.filter((v) => v === true).length };
      }
      const keys = new Set(Object.values(seen).map((s) => s.key));
      checks[w.id] = { agree: keys.size === 1, trues: Object.values(seen)[0].trues };
      if (keys.size !== 1) log(`  WARNING ${w.id}: contenders disagree on the first 200 evaluations`);
    }
    const measured = await measure(contenders, CFG);
    for (const c of contenders) Object.assign(measured[c.name], { family: c.family, path: c.path, ref: c.ref });
    results.workloads[w.id] = { title: w.title, results: measured };
    phases[w.id] = Number(secs(started));
    log(`  ${w.id.padEnd(12)} ${contenders.length} contenders, ${secs(started)} s`);
  }
  for (const e of Object.values(engines)) await closeEngines(e);
}

// ---- state swaps (JS contenders) ------------------------------------------------------------

if (wanted('swap')) {
  const started = performance.now();
  results.swap = await swapWorkload({
    fake,
    files,
    phaseMs: CFG.swapPhaseMs,
    periodMs: SWAP_PERIOD_MS,
    v8Wasm,
  });
  phases.swap = Number(secs(started));
  log(
    `  ${'swap'.padEnd(12)} steady ${CFG.swapPhaseMs} ms, then swapping every ${SWAP_PERIOD_MS} ms for ${CFG.swapPhaseMs} ms, ${secs(started)} s`,
  );
}

// ---- crate floor ----------------------------------------------------------------------------

const floorName = 'crate floor (Rust)';
if (floorBuild.bin) {
  const started = performance.now();
  const floorWorkload = (w) => {
    const [name, ...path] = (w.flagKey ?? '').split('.');
    return {
      id: w.id,
      state: files[w.state],
      secret: secretOf(w),
      flag: w.bulk ? '' : `flags/${name}`,
      path,
      bulk: !!w.bulk,
      context: w.context,
      attrs: w.attrs ?? 6,
      keys: w.keys,
      apply: true,
    };
  };
  const reference = floorWorkload(
    WORKLOADS.find((w) => w.id === 'bool') ?? {
      id: 'ref',
      state: 'fixture',
      flagKey: 'fallthrough-test-2.enabled',
      context: 'reference',
      keys: 100_000,
    },
  );
  const floor = runFloor(floorBuild.bin, {
    rounds: CFG.rounds,
    roundMs: CFG.roundMs,
    warmMs: CFG.warmMs,
    workloads: WORKLOADS.map(floorWorkload),
    swap: wanted('swap')
      ? {
          workload: reference,
          states: [files.fixture, files.fixtureB],
          phaseMs: CFG.swapPhaseMs,
          periodMs: SWAP_PERIOD_MS,
        }
      : null,
    memory: wanted('memory')
      ? {
          workload: reference,
          states: [files.fixture, files.fixtureB],
          evals: CFG.memEvals,
          swaps: CFG.memSwaps,
          evalsBetweenSwaps: 100,
        }
      : null,
  });
  for (const [id, r] of Object.entries(floor.workloads)) {
    results.workloads[id].results[floorName] = { ...r, family: 'floor' };
    const w = WORKLOADS.find((x) => x.id === id);
    if (checks[id] && w?.defaultValue === false && r.check !== checks[id].trues) {
      log(
        `  WARNING ${id}: the crate floor answered true ${r.check}/200 times, the JS contenders ${checks[id].trues}/200`,
      );
    }
  }
  if (floor.swap && results.swap) results.swap[floorName] = floor.swap;
  results.floorMemory = floor.memory ?? null;
  phases.floor = Number(secs(started));
  log(`  ${'crate floor'.padEnd(12)} all of the above in Rust, ${secs(started)} s`);
}

// ---- memory (fresh processes) ---------------------------------------------------------------

function child(task) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--expose-gc', `${root}bench/child.mjs`, JSON.stringify(task)], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`child ${task.mode} ${task.who} exited with ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

/** Runs each lane's tasks in order, the lanes side by side (two cores; memory does not care). */
async function lanes(...queues) {
  const out = new Map();
  await Promise.all(
    queues.map(async (queue) => {
      for (const task of queue) out.set(task, await child(task));
    }),
  );
  return out;
}

const base = { baseUrl: fake.baseUrl, v8Wasm, files: [files.fixture, files.fixtureB] };
const jsFamilies = ['v8', 'ours', 'ours-wasm'];
if (wanted('memory')) {
  const started = performance.now();
  await fake.setState(FIXTURE_SECRET, files.fixture, '"memory"');
  const task = (mode, who) => ({ ...base, mode, who, evals: CFG.memEvals, swaps: CFG.memSwaps });
  // Our swap runs drive the shared fake CDN: they share lane A, so never two at once.
  const laneA = [task('memory-evals', 'ours'), task('memory-swaps', 'ours')];
  const laneB = [task('memory-evals', 'v8'), task('memory-evals', 'constant'), task('memory-swaps', 'v8')];
  // The wasm engine's memory under 1M evaluations is bounded by crates/confidence-host/tests/suite/engine_wasm.rs; here
  // only its swaps run (1M evaluations at its speed would not fit the 10-minute budget).
  laneA.push(task('memory-swaps', 'ours-wasm'));
  const done = await lanes(laneA, laneB);
  results.memory = { evals: CFG.memEvals, swaps: CFG.memSwaps, evalRuns: {}, swapRuns: {} };
  for (const [t, r] of done) results.memory[t.mode === 'memory-evals' ? 'evalRuns' : 'swapRuns'][t.who] = r;
  phases.memory = Number(secs(started));
  log(
    `  ${'memory'.padEnd(12)} ${CFG.memEvals.toLocaleString('en')} evaluations and ${CFG.memSwaps} state swaps per contender, ${secs(started)} s`,
  );
}

// ---- start-up -------------------------------------------------------------------------------

if (wanted('startup')) {
  const started = performance.now();
  await fake.setState(FIXTURE_SECRET, files.encrypted, '"startup"');
  const who = ['constant', ...jsFamilies];
  const runs = Object.fromEntries([...who, 'floor'].map((w) => [w, []]));
  for (let rep = 0; rep < CFG.startupReps; rep++) {
    for (const w of who) runs[w].push((await child({ ...base, mode: 'startup', who: w })).ms);
    if (floorBuild.bin) runs.floor.push(floorStartup(floorBuild.bin, fake.baseUrl, FIXTURE_SECRET, ENCRYPTION_KEY).ms);
  }
  results.startup = Object.fromEntries(
    Object.entries(runs)
      .filter(([, v]) => v.length)
      .map(([k, v]) => {
        const s = [...v].sort((a, b) => a - b);
        return [k, { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1], runs: v.length }];
      }),
  );
  phases.startup = Number(secs(started));
  log(`  ${'startup'.padEnd(12)} ${CFG.startupReps} fresh processes per contender, ${secs(started)} s`);
}

fake.stop();
await OpenFeature.close();
const measureSeconds = (performance.now() - measureStart) / 1000;

// ---- report ---------------------------------------------------------------------------------

const fmtOps = (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e4 ? `${(v / 1e3).toFixed(1)}k` : v.toFixed(0));
const fmtUs = (v) =>
  v >= 1000 ? `${(v / 1000).toFixed(1)} ms` : v >= 100 ? `${v.toFixed(0)} µs` : `${v.toFixed(1)} µs`;
const fmtX = (v) =>
  v === undefined || !Number.isFinite(v) ? '—' : v < 0.1 ? `${v.toPrecision(2)}×` : `${v.toFixed(2)}×`;
const fmtMiB = (b) => (b == null ? '—' : `${(b / 1048576).toFixed(1)} MiB`);

function table(header, rows) {
  const widths = header.map((h, k) => Math.max(h.length, ...rows.map((r) => String(r[k]).length)));
  const line = (cells) =>
    cells.map((c, k) => (k === 0 ? String(c).padEnd(widths[k]) : String(c).padStart(widths[k]))).join('  ');
  return [line(header), widths.map((w) => '─'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

// `detail` (per-workload tables) goes to the console only; `out` also to bench/RESULTS.md.
const detail = [];
const out = [];
const say = (s = '') => out.push(s);

for (const [id, w] of Object.entries(results.workloads)) {
  const r = w.results;
  const floor = r[floorName];
  const v8Of = r['V8-wasm · OF'];
  const v8Direct = r['V8-wasm · direct'] ?? r['V8-wasm · bulk'];
  const rows = Object.entries(r).map(([name, m]) => {
    const vs = m.path === 'of' || m.ref === 'ceiling' ? v8Of : v8Direct;
    return [
      name,
      fmtOps(m.ops),
      fmtUs(m.p50),
      fmtUs(m.p99),
      fmtX(vs && m.ops / vs.ops),
      fmtX(floor && m.ops / floor.ops),
    ];
  });
  detail.push(`${id}: ${w.title}${checks[id] ? (checks[id].agree ? '  [answers agree]' : '  [ANSWERS DIFFER]') : ''}`);
  detail.push(table(['contender', 'ops/s', 'p50', 'p99', '÷ V8-wasm', '÷ floor'], rows), '');
}

// The same figures in one compact table: ops/s (p99) per workload and contender.
const columns = [
  ['ceiling OF', ['constant · OF']],
  ['V8 OF', ['V8-wasm · OF']],
  ['V8 direct', ['V8-wasm · direct', 'V8-wasm · bulk']],
  ['ours OF', ['ours · OF']],
  ['ours direct', ['ours · direct', 'ours · bulk']],
  ['ours class', ['ours · native class', 'ours · native class bulk']],
  ['wasm-engine OF', ['ours wasm-engine · OF']],
  ['wasm-engine direct', ['ours wasm-engine · direct', 'ours wasm-engine · bulk']],
  ['floor', [floorName]],
];
if (Object.keys(results.workloads).length) {
  const rows = Object.entries(results.workloads).map(([id, w]) => [
    id,
    ...columns.map(([, names]) => {
      const m = names.map((n) => w.results[n]).find(Boolean);
      return m ? `${fmtOps(m.ops)} (${fmtUs(m.p99)})` : '—';
    }),
  ]);
  say('throughput: ops/s (p99 latency) per workload and contender');
  say(table(['workload', ...columns.map(([h]) => h)], rows));
  say();
}

if (results.swap) {
  const rows = Object.entries(results.swap).map(([name, m]) => [
    name,
    fmtUs(m.steady.p50),
    fmtUs(m.steady.p99),
    fmtUs(m.swap.p50),
    fmtUs(m.swap.p99),
    fmtUs(m.swap.p999),
    fmtUs(m.swap.max),
    fmtX(m.swap.p99 / m.steady.p99),
    String(m.swap.swaps),
  ]);
  say(
    `swap: tight loop on fallthrough-test-2.enabled, state replaced every ${SWAP_PERIOD_MS} ms (${CFG.swapPhaseMs} ms per phase)`,
  );
  say(
    table(
      [
        'contender',
        'steady p50',
        'steady p99',
        'swap p50',
        'swap p99',
        'swap p99.9',
        'swap max',
        'p99 swap÷steady',
        'swaps',
      ],
      rows,
    ),
  );
  say();
}

const mem = results.memory;
const fm = results.floorMemory;
if (mem) {
  const reduced = QUICK ? ' (quick mode: 30,000 evaluations and 100 swaps instead of 1,000,000 and 1000)' : '';
  const rows = Object.entries(mem.evalRuns).map(([who, m]) => [
    `${who} · OF, ${mem.evals.toLocaleString('en')} evals`,
    fmtMiB(m.rssStart),
    fmtMiB(m.rssAfter),
    fmtMiB(m.guestAfter),
  ]);
  for (const [who, m] of Object.entries(mem.swapRuns)) {
    rows.push([`${who}, ${mem.swaps} swaps`, fmtMiB(m.rssStart), fmtMiB(m.rssAfter), fmtMiB(m.guestAfter)]);
  }
  if (fm) {
    rows.push([
      `crate floor, ${fm.evals.toLocaleString('en')} evals`,
      fmtMiB(fm.rssLoaded),
      fmtMiB(fm.rssAfterEvals),
      '—',
    ]);
    rows.push([`crate floor, ${fm.swaps} swaps`, fmtMiB(fm.rssAfterEvals), fmtMiB(fm.rssAfterSwaps), '—']);
  }
  say(`memory: fresh process per contender, RSS after GC${reduced}`);
  say(table(['run', 'RSS before', 'RSS after', 'guest memory after'], rows));
  say();
}

if (results.startup) {
  const rows = Object.entries(results.startup).map(([who, s]) => [
    who,
    fmtUs(s.median * 1000),
    fmtUs(s.min * 1000),
    fmtUs(s.max * 1000),
  ]);
  say(
    `startup: constructor → READY (setProviderAndWait) against the loopback CDN, encrypted state, fresh process each (${CFG.startupReps} runs)`,
  );
  say(table(['contender', 'median', 'min', 'max'], rows));
  say();
}

// One table of ratios: every cell is ours ÷ the baseline as a goodness ratio (> 1: ours is
// faster / leaner); the ceiling and floor columns show the share of them ours reaches.
const ratioHeader = [
  'workload',
  'OF: ours÷V8',
  'direct: ours÷V8',
  'class: ours÷V8',
  'OF: ours÷ceiling',
  'class: ours÷floor',
  'wasm-engine OF÷V8',
  'wasm-engine direct÷V8',
];
const ratioRows = [];
const speed = (a, b) => (a && b ? a.ops / b.ops : undefined);
const lower = (a, b) => (a != null && b != null ? b / a : undefined);
for (const [id, w] of Object.entries(results.workloads)) {
  const r = w.results;
  const bulk = id === 'bulk';
  const v8d = bulk ? r['V8-wasm · bulk'] : r['V8-wasm · direct'];
  const od = bulk ? r['ours · bulk'] : r['ours · direct'];
  const oc = bulk ? r['ours · native class bulk'] : r['ours · native class'];
  const row = [
    id,
    fmtX(speed(r['ours · OF'], r['V8-wasm · OF'])),
    fmtX(speed(od, v8d)),
    fmtX(speed(oc, v8d)),
    fmtX(speed(r['ours · OF'], r['constant · OF'])),
    fmtX(speed(oc, r[floorName])),
    fmtX(speed(r['ours wasm-engine · OF'], r['V8-wasm · OF'])),
    fmtX(speed(bulk ? r['ours wasm-engine · bulk'] : r['ours wasm-engine · direct'], v8d)),
  ];
  ratioRows.push(row);
}
const pad = (row) => [...row, ...Array(ratioHeader.length - row.length).fill('—')];
if (results.swap) {
  const s = results.swap;
  const ours = s['ours · native class']?.swap;
  for (const q of ['p99', 'p999']) {
    const row = [
      `swap ${q === 'p99' ? 'p99' : 'p99.9'} (latency)`,
      '—',
      '—',
      fmtX(lower(ours?.[q], s['V8-wasm · direct']?.swap[q])),
      '—',
      fmtX(lower(ours?.[q], s[floorName]?.swap[q])),
    ];
    row.push('—', fmtX(lower(s['ours wasm-engine · native class']?.swap[q], s['V8-wasm · direct']?.swap[q])));
    ratioRows.push(pad(row));
  }
}
if (mem) {
  const e = mem.evalRuns;
  const s = mem.swapRuns;
  const n = QUICK ? '30k' : '1M';
  ratioRows.push(
    pad([
      `RSS after ${n} evals`,
      fmtX(lower(e.ours?.rssAfter, e.v8?.rssAfter)),
      '—',
      '—',
      fmtX(lower(e.ours?.rssAfter, e.constant?.rssAfter)),
      fmtX(lower(e.ours?.rssAfter, fm?.rssAfterEvals)),
      fmtX(lower(e['ours-wasm']?.rssAfter, e.v8?.rssAfter)),
    ]),
  );
  ratioRows.push(
    pad([
      `RSS after ${mem.swaps} swaps`,
      '—',
      '—',
      fmtX(lower(s.ours?.rssAfter, s.v8?.rssAfter)),
      '—',
      fmtX(lower(s.ours?.rssAfter, fm?.rssAfterSwaps)),
      '—',
      fmtX(lower(s['ours-wasm']?.rssAfter, s.v8?.rssAfter)),
    ]),
  );
  ratioRows.push(
    pad([
      `guest mem after ${mem.swaps} swaps`,
      '—',
      '—',
      '—',
      '—',
      '—',
      fmtX(lower(s['ours-wasm']?.guestAfter, s.v8?.guestAfter)),
    ]),
  );
}
if (results.startup) {
  const st = results.startup;
  const row = [
    'startup (median)',
    fmtX(lower(st.ours?.median, st.v8?.median)),
    '—',
    '—',
    fmtX(lower(st.ours?.median, st.constant?.median)),
    fmtX(lower(st.ours?.median, st.floor?.median)),
  ];
  row.push(fmtX(lower(st['ours-wasm']?.median, st.v8?.median)), '—');
  ratioRows.push(row);
}

say(`RATIOS (${MODE} mode): ours ÷ baseline, > 1 = ours faster / lower latency / less memory`);
say(`  V8 = the guest (${v8Label}) in V8's WebAssembly behind a host shaped like the official Node provider`);
say('  OF = through the OpenFeature client; direct = evaluateBoolean/evaluateObject (bulk: resolve) vs the same');
say('  host without the SDK; class = the NativeResolver vs that host; ceiling = a constant provider through');
say('  the same client; floor = the resolver crate called natively in Rust with its own loggers');
say(table(ratioHeader, ratioRows));
const totalSeconds = (performance.now() - t0) / 1000;
say();
say(
  `measured in ${measureSeconds.toFixed(0)} s (total ${totalSeconds.toFixed(0)} s incl. building the floor), ${cpus().length} cores, load at end ${loadavg()[0].toFixed(2)}`,
);
say('ours via the provider cannot poll faster than 1 s: the swap workload uses the native class for ours');

const text = out.join('\n');
log(`\n${detail.join('\n')}\n${text}`);

// ---- files ----------------------------------------------------------------------------------

const stamp = new Date().toISOString();
const json = {
  meta: {
    date: stamp,
    mode: MODE,
    only: ONLY ? [...ONLY] : null,
    node: process.version,
    cores: cpus().length,
    cpu: cpus()[0]?.model,
    v8Wasm: v8Wasm.replace(root, ''),
    config: CFG,
    measureSeconds,
    phases,
    totalSeconds,
  },
  ...results,
  checks,
  ratios: { header: ratioHeader, rows: ratioRows },
};
mkdirSync(`${root}bench/results/history`, { recursive: true });
writeFileSync(`${root}bench/results/latest.json`, `${JSON.stringify(json, null, 2)}\n`);
writeFileSync(`${root}bench/results/history/${stamp.replace(/[:.]/g, '-')}-${MODE}.json`, `${JSON.stringify(json)}\n`);
log('results: bench/results/latest.json');

if (UPDATE_RESULTS && ONLY) {
  log('bench/RESULTS.md not updated: --only measures part of the workloads');
} else if (UPDATE_RESULTS) {
  const file = `${root}bench/RESULTS.md`;
  const results = readFileSync(file, 'utf8');
  const start = `<!-- bench:${MODE}:start -->`;
  const end = `<!-- bench:${MODE}:end -->`;
  const a = results.indexOf(start);
  const b = results.indexOf(end);
  if (a < 0 || b < a) {
    log(`bench/RESULTS.md has no ${start} … ${end} markers: not updated`);
  } else {
    const block = `${start}\n\`\`\`text\n${text}\n\`\`\`\n`;
    writeFileSync(file, results.slice(0, a) + block + results.slice(b));
    log(`bench/RESULTS.md: ${MODE} table updated`);
  }
}
