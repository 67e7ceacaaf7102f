// The contenders, built once per state and shared by the workloads: the constant provider (the
// SDK's ceiling), the V8-wasm host (official architecture), our provider (OpenFeature client,
// direct API, bulk) and our native class on the default (native) engine, and the same on our wasm engine.
import { OpenFeature } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';
import { NativeResolver } from 'confidence-openfeature-provider/native';

import { V8Provider } from '../v8-host.mjs';
import { atPath, contextFactory, root } from './workload.mjs';

export const OUR_WASM = `${root}wasm/confidence_resolver.wasm`;
export const silentLogger = { error() {}, warn() {}, info() {}, debug() {} };

/** Answers every evaluation with a constant: what the OpenFeature SDK costs on its own. */
export class ConstantProvider {
  metadata = { name: 'Constant' };
  runsOn = 'server';
  hooks = [];
  resolveBooleanEvaluation() {
    return Promise.resolve({ value: true, variant: 'on', reason: 'STATIC' });
  }
  resolveStringEvaluation() {
    return Promise.resolve({ value: 'on', variant: 'on', reason: 'STATIC' });
  }
  resolveNumberEvaluation() {
    return Promise.resolve({ value: 1, variant: 'on', reason: 'STATIC' });
  }
  resolveObjectEvaluation() {
    return Promise.resolve({
      value: { color: 'blue', density: 'compact', radius: 4 },
      variant: 'on',
      reason: 'STATIC',
    });
  }
}

let domains = 0;

async function client(provider) {
  const domain = `bench-${++domains}`;
  await OpenFeature.setProviderAndWait(domain, provider);
  return OpenFeature.getClient(domain);
}

/** Everything resolving one state, ready to evaluate. */
export async function buildEngines({ state, secret, v8Wasm }) {
  const ours = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    initialState: state,
    offline: true,
    logger: silentLogger,
  });
  const v8 = new V8Provider({ wasmPath: v8Wasm, flagClientSecret: secret, initialState: state });
  const engines = {
    constant: { client: await client(new ConstantProvider()) },
    v8: { provider: v8, client: await client(v8) },
    ours: {
      provider: ours,
      client: await client(ours),
      native: new NativeResolver({ flagClientSecret: secret, offline: true, initialState: state }),
    },
  };
  // Our wasm engine: the same provider running our guest in wasmtime.
  const provider = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    initialState: state,
    offline: true,
    engine: 'wasm',
    logger: silentLogger,
  });
  engines.oursWasm = {
    provider,
    client: await client(provider),
    native: new NativeResolver({ flagClientSecret: secret, wasmPath: OUR_WASM, offline: true, initialState: state }),
  };
  return engines;
}

export async function closeEngines(engines) {
  for (const e of Object.values(engines)) {
    await e.provider?.onClose?.();
    await e.native?.close(1000);
  }
}

/**
 * Contenders of a one-flag workload `{ flagKey, defaultValue, type, context, attrs, keys }`.
 * `paths` picks which ones (`of`, `direct`, `class`, `constant`). Each op returns the value.
 */
export function singleFlagContenders(engines, w, paths = ['constant', 'of', 'direct', 'class']) {
  const ofCtx = contextFactory(w);
  const rawCtx = contextFactory(w, true);
  const [name, ...path] = w.flagKey.split('.');
  const flags = [`flags/${name}`];
  const get = w.type === 'object' ? 'getObjectValue' : 'getBooleanValue';
  const direct = w.type === 'object' ? 'evaluateObject' : 'evaluateBoolean';
  const out = [];
  const ofPath = (label, c) => ({ name: label, async: true, op: (i) => c[get](w.flagKey, w.defaultValue, ofCtx(i)) });
  if (paths.includes('constant')) out.push({ ...ofPath('constant · OF', engines.constant.client), ref: 'ceiling' });
  const families = [
    ['V8-wasm', engines.v8],
    ['ours', engines.ours],
  ];
  families.push(['ours wasm-engine', engines.oursWasm]);
  for (const [family, e] of families) {
    const isV8 = family === 'V8-wasm';
    if (paths.includes('of')) out.push({ ...ofPath(`${family} · OF`, e.client), family, path: 'of' });
    if (paths.includes('direct')) {
      const op = isV8
        ? (i) => e.provider.evaluate(w.flagKey, w.defaultValue, ofCtx(i)).value
        : (i) => e.provider[direct](w.flagKey, w.defaultValue, ofCtx(i)).value;
      out.push({ name: `${family} · direct`, op, family, path: 'direct' });
    }
    if (paths.includes('class') && !isV8) {
      const r = e.native;
      const op = (i) => {
        const f = r.resolve(flags, JSON.stringify(rawCtx(i)), true).flags[0];
        return f?.valueJson === undefined ? w.defaultValue : (atPath(JSON.parse(f.valueJson), path) ?? w.defaultValue);
      };
      out.push({ name: `${family} · native class`, op, family, path: 'class' });
    }
  }
  return out;
}

/** Contenders of the bulk workload: all of the client's flags in one resolve, apply on. */
export function bulkContenders(engines, w) {
  const ofCtx = contextFactory(w);
  const rawCtx = contextFactory(w, true);
  const out = [
    {
      name: 'V8-wasm · bulk',
      op: (i) => engines.v8.provider.resolve(ofCtx(i), [], true),
      family: 'V8-wasm',
      path: 'direct',
    },
  ];
  const families = [['ours', engines.ours]];
  families.push(['ours wasm-engine', engines.oursWasm]);
  for (const [family, e] of families) {
    out.push({
      name: `${family} · bulk`,
      async: true,
      op: (i) => e.provider.resolve(ofCtx(i), [], { apply: true }),
      family,
      path: 'direct',
    });
    out.push({
      name: `${family} · native class bulk`,
      op: (i) => {
        const res = e.native.resolve([], JSON.stringify(rawCtx(i)), true);
        const values = {};
        for (const f of res.flags) values[f.flag] = f.valueJson === undefined ? null : JSON.parse(f.valueJson);
        return values;
      },
      family,
      path: 'class',
    });
  }
  return out;
}
