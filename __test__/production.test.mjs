// Production promises against the loopback fake Confidence: `close()` means closed (no request
// leaves afterwards, every path answers PROVIDER_NOT_READY and logs nothing, the undelivered
// are counted), and the client secret never shows (inspect, JSON, errors, plain http).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { inspect } from 'node:util';

import { ErrorCode } from '@openfeature/server-sdk';
import { ConfidenceServerProviderLocal } from 'confidence-openfeature-provider';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { encryptedState, encryptionKey, secret } from './support/fixtures.mjs';
import { fakeNativeOptions, fakeProvider, metric, quietLogger } from './support/provider.mjs';
import { sleep, until } from './support/wait.mjs';

const { NativeResolver } = createRequire(import.meta.url)('confidence-openfeature-provider/native');

let fake;
before(async () => {
  fake = await startFakeConfidence();
  await fake.setState(secret, encryptedState);
});
after(() => fake.stop());

const visitor = { visitor_id: 'tutorial_visitor' };
const requests = async () => {
  const { cdn, logs } = await fake.counters();
  return cdn.requests + logs.requests;
};
/** `enqueued = sent + dropped + rejected + queued`, from one metrics text. */
function assertAccounted(source) {
  const m = (name) => metric(source, name);
  const [enqueued, sent, dropped, rejected, queued] = [
    'confidence_log_batches_enqueued_total',
    'confidence_log_batches_sent_total',
    'confidence_log_batches_dropped_total',
    'confidence_log_batches_rejected_total',
    'confidence_log_batches_queued',
  ].map(m);
  assert.equal(
    enqueued,
    sent + dropped + rejected + queued,
    JSON.stringify({ enqueued, sent, dropped, rejected, queued }),
  );
  return { enqueued, sent, dropped, rejected, queued };
}

test('after close() no request of any kind leaves, even with an upload hung and due for a retry', async () => {
  await fake.control({ cmd: 'reset' });
  await fake.setState(secret, encryptedState);
  await fake.setFault('logs', { type: 'slow', ms: 10_000 });
  const p = fakeProvider(fake, { requestTimeout: 1000, logger: quietLogger });
  await p.initialize();
  for (let i = 0; i < 20; i++) p.evaluateBoolean('fallthrough-test-2.enabled', false, { visitor_id: `v${i}` });
  await until('an upload in flight', async () => (await fake.counters()).logs.requests >= 1);
  await p.onClose();
  const seen = await requests();
  // The hung upload would time out after 1 s and be retried: time passing is what this waits for.
  await sleep(3000);
  assert.equal(await requests(), seen, 'no request after close');
  const { dropped } = assertAccounted(p);
  assert.ok(dropped >= 1, 'what was not delivered by the deadline counts as dropped');
  await fake.setFault('logs', { type: 'none' });
});

test('a closed provider answers PROVIDER_NOT_READY on every path and logs nothing', async () => {
  const p = fakeProvider(fake, { offline: true, initialState: readFileSync(encryptedState) });
  await p.initialize();
  assert.equal(p.evaluateBoolean('fallthrough-test-2.enabled', false, visitor).errorCode, undefined);
  await p.onClose();
  const before = metric(p, 'confidence_log_batches_enqueued_total');
  for (let i = 0; i < 2000; i++) {
    const details = p.evaluateBoolean('fallthrough-test-2.enabled', false, { visitor_id: `v${i}` });
    assert.equal(details.errorCode, ErrorCode.PROVIDER_NOT_READY);
  }
  const viaSdk = await p.resolveBooleanEvaluation('fallthrough-test-2.enabled', false, visitor);
  assert.equal(viaSdk.errorCode, ErrorCode.PROVIDER_NOT_READY);
  const bulk = await p.resolve(visitor);
  assert.equal(bulk.errorCode, ErrorCode.PROVIDER_NOT_READY);
  assert.equal(metric(p, 'confidence_log_batches_enqueued_total'), before, 'nothing logged after close');

  const native = new NativeResolver(fakeNativeOptions(fake));
  await native.initialize(5000);
  await native.close(1000);
  assert.throws(
    () => native.evaluate('flags/tutorial-feature', '{}', true),
    (e) => e.code === 'NOT_READY',
  );
  assert.throws(
    () => native.resolve([], '{}', true),
    (e) => e.code === 'NOT_READY',
  );
});

test('after close with a failing endpoint every batch is accounted for', async () => {
  await fake.setFault('logs', { type: 'status', code: 503 });
  const p = fakeProvider(fake, { requestTimeout: 500, logger: quietLogger });
  await p.initialize();
  for (let i = 0; i < 10; i++) p.evaluateBoolean('fallthrough-test-2.enabled', false, { visitor_id: `v${i}` });
  assertAccounted(p);
  await p.onClose();
  const { enqueued, sent, dropped, queued } = assertAccounted(p);
  assert.ok(enqueued >= 1 && sent === 0 && dropped === enqueued && queued === 0, `${enqueued} ${dropped}`);
  await fake.setFault('logs', { type: 'none' });
});

test('the secret, the key and the proxy password stay out of inspect, entries and JSON', async () => {
  const proxyPassword = 'hunter2-proxy-password';
  const p = new ConfidenceServerProviderLocal({
    flagClientSecret: secret,
    encryptionKey,
    offline: true,
    initialState: readFileSync(encryptedState),
    proxy: `http://user:${proxyPassword}@127.0.0.1:9`,
    logger: quietLogger,
  });
  for (const shown of [
    inspect(p, { depth: 10, showHidden: true }),
    JSON.stringify(p),
    JSON.stringify(Object.entries(p)),
    String(p),
  ]) {
    for (const hidden of [secret, encryptionKey, proxyPassword]) {
      assert.ok(!shown.includes(hidden), `${hidden.slice(0, 4)}… is not shown in ${shown.slice(0, 80)}`);
    }
  }
  await p.onClose();
});

test('the native class: no key bytes, no secret fragments, no unknown options, https off loopback', () => {
  const key = Buffer.from(encryptionKey, 'hex');
  assert.throws(
    () => new NativeResolver({ flagClientSecret: secret, encryptionKey: key, offline: true }),
    (e) => e.code === 'INVALID_OPTION' && /^encryptionKey: /.test(e.message) && !/\d+,\d+,\d+/.test(e.message),
  );
  assert.throws(
    () => new NativeResolver({ flagClientSecret: secret, flushIntervall: 5000 }),
    (e) => e.code === 'INVALID_OPTION' && /flushIntervall/.test(e.message),
  );
  for (const apiBaseUrl of ['http://127.attacker.example/', 'http://127.0.0.1.nip.io/', 'http://10.1.2.3/']) {
    assert.throws(
      () => new NativeResolver({ flagClientSecret: secret, apiBaseUrl }),
      (e) => e.code === 'INVALID_OPTION' && /^apiBaseUrl: .*loopback/.test(e.message),
      apiBaseUrl,
    );
    assert.throws(
      () => new NativeResolver({ flagClientSecret: secret, cdnBaseUrl: apiBaseUrl }),
      (e) => e.code === 'INVALID_OPTION' && /^cdnBaseUrl: /.test(e.message),
      apiBaseUrl,
    );
  }
  // A state without this secret's credential is refused at once, and neither secret shows.
  const wrong = 'a-wrong-secret-of-some-length';
  assert.throws(
    () =>
      new NativeResolver({
        flagClientSecret: wrong,
        encryptionKey,
        offline: true,
        initialState: readFileSync(encryptedState),
      }),
    (e) =>
      e.code === 'INVALID_OPTION' &&
      /^initialState: .*no credential for this client secret/.test(e.message) &&
      !e.message.includes(wrong.slice(0, 3)) &&
      !e.message.includes(secret.slice(0, 3)) &&
      !e.message.includes(secret.slice(-3)),
  );
});
