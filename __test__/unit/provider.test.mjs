// The provider over a fake native resolver, through the seam in js/src/native.ts: what it asks
// the addon for, the events it emits for what the addon reports, its error paths and close.
// The addon itself is never loaded (checked at the end), and no server runs.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, afterEach, test } from 'node:test';

import { ErrorCode, OpenFeature, ProviderEvents, ProviderStatus } from '@openfeature/server-sdk';

import { setNativeResolverFactory } from '../../dist/cjs/native.js';
import { nativeOptions, resolveOptions } from '../../dist/cjs/options.js';
import { ConfidenceServerProviderLocal } from '../../dist/cjs/provider.js';
import { clientFor, recordEvents } from '../support/provider.mjs';
import { until } from '../support/wait.mjs';

const require = createRequire(import.meta.url);

/** An error as the addon makes them: its stable code on `err.code`. */
const nativeFailure = (code, message) => Object.assign(new Error(message), { code });

/** A logger that keeps every line, for assertions. */
function recordingLogger() {
  const lines = [];
  const keep = (level) => (message) => lines.push(`${level}: ${message}`);
  return { lines, logger: { error: keep('error'), warn: keep('warn'), info: keep('info'), debug: keep('debug') } };
}

/**
 * A stand-in for the addon's NativeResolver: `sync` is what its background sync would report
 * (`fresh`: the CDN answers right now), `calls` what the provider asked of it.
 */
function fakeNative() {
  const calls = [];
  const sync = {
    ready: true,
    fresh: true,
    lastSuccessMs: Date.now(),
    lastError: undefined,
    etag: '"e1"',
    changed: null,
  };
  const flags = new Map();
  const notices = [];
  let initialize = async () => {};
  return {
    calls,
    sync,
    flags,
    notices,
    failInitialize(error) {
      initialize = async () => {
        throw error;
      };
    },
    closeFails: undefined,
    initialize(timeoutMs) {
      calls.push(['initialize', timeoutMs]);
      return initialize();
    },
    async close(timeoutMs) {
      calls.push(['close', timeoutMs]);
      if (this.closeFails) throw this.closeFails;
    },
    evaluate(flag, contextJson, apply) {
      calls.push(['evaluate', flag, JSON.parse(contextJson), apply]);
      if (this.evaluateFails) throw this.evaluateFails;
      return flags.get(flag) ?? null;
    },
    resolve(names, contextJson, apply) {
      calls.push(['resolve', names, JSON.parse(contextJson), apply]);
      return {
        resolveId: 'r1',
        resolveToken: Buffer.from('token'),
        flags: [...flags.values()],
        materializationsToWrite: [],
      };
    },
    registerResolves(pairs) {
      calls.push(['registerResolves', pairs.length / 2]);
    },
    status() {
      return {
        ready: sync.ready,
        fetches: 0,
        updates: 0,
        failures: 0,
        consecutiveFailures: 0,
        lastSuccessMs: sync.fresh ? Date.now() : sync.lastSuccessMs,
        etag: sync.etag,
        lastError: sync.lastError,
        changedFlags: [],
        fromSnapshot: false,
      };
    },
    /** A state swap in the background: like the addon, changes add up until taken. */
    swap(changedFlags, etag) {
      sync.changed = [...(sync.changed ?? []), ...changedFlags].sort();
      sync.etag = etag;
    },
    takeChangedFlags() {
      const changed = sync.changed;
      sync.changed = null;
      return changed;
    },
    takeNotices() {
      return notices.splice(0);
    },
    metrics: () => 'confidence_fake 1\n',
  };
}

/** A provider over `native`, with the options it got and the options its factory received. */
function providerOver(native, extra = {}) {
  const received = [];
  setNativeResolverFactory((nativeOptions) => {
    received.push(nativeOptions);
    return native;
  });
  const options = { flagClientSecret: 'secret', encryptionKey: 'ab'.repeat(32), stateUpdateInterval: 1000, ...extra };
  return { provider: new ConfidenceServerProviderLocal(options), options, received };
}

const matched = (name, value) => ({
  flag: `flags/${name}`,
  variant: `flags/${name}/variants/on`,
  reason: 'RESOLVE_REASON_MATCH',
  valueJson: JSON.stringify(value),
  shouldApply: true,
  assignmentOrigin: 'rule-1',
});

afterEach(async () => {
  await OpenFeature.clearProviders();
  setNativeResolverFactory(undefined);
});

after(() => {
  const addon = require.resolve('../../index.js');
  assert.equal(require.cache[addon], undefined, 'a unit test loaded the addon');
});

test('the provider asks the factory for a resolver with the native form of its resolved options', () => {
  const { options, received } = providerOver(fakeNative(), {
    engine: 'wasm',
    stateUpdateInterval: 2000,
    userAgent: 'svc/1',
  });
  assert.deepEqual(received, [nativeOptions(resolveOptions(options))]);
});

test('initialize: READY through the SDK, the initialize timeout passed on, notices logged', async () => {
  const native = fakeNative();
  native.notices.push({ level: 'warn', message: 'serving the snapshot' }, { level: 'info', message: 'hello' });
  const { lines, logger } = recordingLogger();
  const { provider } = providerOver(native, { initializeTimeout: 1234, logger });
  const client = await clientFor(provider);
  assert.equal(client.providerStatus, ProviderStatus.READY);
  assert.deepEqual(native.calls[0], ['initialize', 1234]);
  assert.deepEqual(lines, ['warn: serving the snapshot', 'info: hello']);
});

test('initialize without encryptionKey warns that the state is fetched unencrypted, unless offline', async () => {
  const online = recordingLogger();
  await clientFor(providerOver(fakeNative(), { encryptionKey: undefined, logger: online.logger }).provider);
  assert.deepEqual(online.lines, [
    'warn: no encryptionKey: fetching the unencrypted state; set encryptionKey to fetch the encrypted copy',
  ]);
  const offline = recordingLogger();
  const options = { encryptionKey: undefined, offline: true, initialState: new Uint8Array(1), logger: offline.logger };
  await clientFor(providerOver(fakeNative(), options).provider);
  assert.deepEqual(offline.lines, []);
});

test('a failed initialize: ERROR through the SDK with the reason, then READY once a state loads', async () => {
  const native = fakeNative();
  native.sync.ready = false;
  native.failInitialize(nativeFailure('NOT_READY', 'HTTP 503 from the CDN'));
  const { provider } = providerOver(native);
  const client = OpenFeature.getClient('failing-init');
  const seen = recordEvents(client, [ProviderEvents.Ready, ProviderEvents.Error]);
  await assert.rejects(
    OpenFeature.setProviderAndWait('failing-init', provider),
    /^Error: Confidence provider could not load flag state: HTTP 503 from the CDN$/,
  );
  assert.equal(client.providerStatus, ProviderStatus.ERROR);
  native.sync.ready = true;
  await until('PROVIDER_READY after the state loads', () => seen.length > 1);
  assert.deepEqual(
    seen.map((e) => e.event),
    [ProviderEvents.Error, ProviderEvents.Ready],
  );
  assert.equal(seen[1].details.message, 'flag state loaded');
  assert.equal(client.providerStatus, ProviderStatus.READY);
});

test('CONFIGURATION_CHANGED names the flags takeChangedFlags reports, but not the initial load', async () => {
  const native = fakeNative();
  native.swap(['flags/initial'], '"e1"');
  const client = await clientFor(providerOver(native).provider);
  const seen = recordEvents(client, [ProviderEvents.ConfigurationChanged]);
  native.swap(['flags/b', 'flags/a'], '"e2"');
  await until('CONFIGURATION_CHANGED', () => seen.length > 0);
  assert.deepEqual(seen[0].details.flagsChanged, ['a', 'b']);
  assert.deepEqual(seen[0].details.metadata, { stateEtag: '"e2"' });
});

test('STALE when no fresh state arrived for staleAfter, READY when one does again', async () => {
  const native = fakeNative();
  const client = await clientFor(providerOver(native, { staleAfter: 1000 }).provider);
  // The SDK runs a READY handler at once for a provider that is ready: the events after it count.
  const seen = recordEvents(client, [ProviderEvents.Stale, ProviderEvents.Ready]);
  assert.equal(seen[0]?.event, ProviderEvents.Ready);
  const events = () => seen.slice(1).map((e) => [e.event, e.details.message]);
  Object.assign(native.sync, { fresh: false, lastSuccessMs: Date.now() - 60_000, lastError: 'HTTP 500' });
  await until('PROVIDER_STALE', () => seen.length > 1);
  assert.equal(client.providerStatus, ProviderStatus.STALE);
  native.sync.fresh = true;
  await until('PROVIDER_READY', () => seen.length > 2);
  assert.deepEqual(events(), [
    [ProviderEvents.Stale, 'no fresh flag state for 60 s: HTTP 500'],
    [ProviderEvents.Ready, 'fresh flag state again'],
  ]);
  assert.equal(client.providerStatus, ProviderStatus.READY);
});

test('evaluations: the converted context goes to the resolver, its answer comes back as details', async () => {
  const native = fakeNative();
  native.flags.set('flags/banner', matched('banner', { text: 'Hi' }));
  const client = await clientFor(providerOver(native).provider);
  const d = await client.getStringDetails('banner.text', 'none', { targetingKey: 'u1', n: 2n });
  assert.deepEqual(
    [d.value, d.variant, d.reason, d.flagMetadata.stateEtag, d.flagMetadata.confidenceReason],
    ['Hi', 'flags/banner/variants/on', 'TARGETING_MATCH', '"e1"', 'MATCH'],
  );
  assert.deepEqual(native.calls.at(-1), ['evaluate', 'flags/banner', { n: 2, targeting_key: 'u1' }, true]);
  await client.getStringDetails('banner.text', 'none', { targetingKey: 'u1', _confidence_skip_apply: true });
  assert.equal(native.calls.at(-1)[3], false, '_confidence_skip_apply: no exposure');
  const missing = await client.getBooleanDetails('absent', true, {});
  assert.deepEqual([missing.value, missing.errorCode], [true, ErrorCode.FLAG_NOT_FOUND]);
});

test('disableExposureCollection: no evaluation asks the resolver to log an exposure', async () => {
  const native = fakeNative();
  native.flags.set('flags/banner', matched('banner', { text: 'Hi' }));
  const client = await clientFor(providerOver(native, { disableExposureCollection: true }).provider);
  await client.getStringDetails('banner.text', 'none', { targetingKey: 'u1' });
  assert.equal(native.calls.at(-1)[3], false);
});

test('failures before and in the resolver are the default value with an OpenFeature error code', async () => {
  const native = fakeNative();
  const client = await clientFor(providerOver(native).provider);
  const evaluations = native.calls.filter(([call]) => call === 'evaluate').length;
  const badKey = await client.getBooleanDetails('banner..text', false, {});
  assert.deepEqual(
    [badKey.value, badKey.errorCode, badKey.errorMessage],
    [false, ErrorCode.PARSE_ERROR, 'invalid flag key "banner..text": expected "<flag>" or "<flag>.<path>"'],
  );
  const badContext = await client.getBooleanDetails('banner', false, { n: Number.NaN });
  assert.deepEqual(
    [badContext.errorCode, badContext.errorMessage],
    [ErrorCode.INVALID_CONTEXT, 'invalid evaluation context: n: NaN is not a finite number'],
  );
  assert.equal(
    native.calls.filter(([call]) => call === 'evaluate').length,
    evaluations,
    'neither reached the resolver',
  );
  native.evaluateFails = nativeFailure('NOT_READY', 'no flag state loaded yet');
  const notReady = await client.getBooleanDetails('banner', true, {});
  assert.deepEqual([notReady.value, notReady.errorCode], [true, ErrorCode.PROVIDER_NOT_READY]);
  native.evaluateFails = new Error('something broke');
  const general = await client.getBooleanDetails('banner', true, {});
  assert.deepEqual([general.errorCode, general.errorMessage], [ErrorCode.GENERAL, 'something broke']);
});

test('bulk resolve never rejects: flag names with dots are a PARSE_ERROR bundle', async () => {
  const native = fakeNative();
  native.flags.set('flags/banner', matched('banner', { text: 'Hi' }));
  const { provider } = providerOver(native);
  await clientFor(provider);
  const bundle = await provider.resolve({ targetingKey: 'u1' }, ['banner']);
  assert.deepEqual(bundle.flags.banner.value, { text: 'Hi' });
  assert.equal(bundle.resolveToken, Buffer.from('token').toString('base64'));
  assert.deepEqual(native.calls.at(-1), ['resolve', ['flags/banner'], { targeting_key: 'u1' }, false]);
  const bad = await provider.resolve({}, ['banner.text']);
  assert.deepEqual(
    [bad.errorCode, bad.errorMessage, bad.flags],
    [ErrorCode.PARSE_ERROR, 'flagNames must be an array of flag names (no dots)', {}],
  );
});

test('close hands over buffered telemetry, then closes the resolver with the 3 s bound; a failed flush is a warning', async () => {
  const native = fakeNative();
  const { lines, logger } = recordingLogger();
  const { provider } = providerOver(native, { logger });
  await clientFor(provider);
  provider.evaluateBoolean('absent', false, {});
  native.closeFails = nativeFailure('UPLOAD_FAILED', 'log upload failed: HTTP 503');
  await OpenFeature.clearProviders();
  assert.deepEqual(native.calls.slice(-2), [
    ['registerResolves', 1],
    ['close', 3000],
  ]);
  assert.deepEqual(lines, ['warn: final log flush failed: log upload failed: HTTP 503']);
});
