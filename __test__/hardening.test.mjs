// Production hardening through the real OpenFeature SDK against the loopback fake Confidence:
// the last-known-good snapshot (written, served during an outage, revalidated, ignored when
// corrupt, accepted as initialState), the proxy option, and the client secret staying out of
// every log line, error and metric. TLS, private CAs and the proxy environment variables are
// covered in tests/network.rs.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { ErrorCode, OpenFeature, ProviderStatus } from '@openfeature/server-sdk';

import { startFakeConfidence } from './support/fake-confidence.mjs';
import { encryptedState, encryptionKey, secret } from './support/fixtures.mjs';
import { clientFor, fakeProvider } from './support/provider.mjs';
import { until } from './support/wait.mjs';

let fake;
let dir;
before(async () => {
  fake = await startFakeConfidence();
  await fake.setState(secret, encryptedState);
  dir = mkdtempSync(join(tmpdir(), 'cf-hardening-'));
});
after(async () => {
  await OpenFeature.close();
  fake.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A logger that keeps every line, for assertions. */
function recordingLogger() {
  const lines = [];
  const keep =
    (level) =>
    (...args) =>
      lines.push(`${level}: ${args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ')}`);
  return { lines, logger: { error: keep('error'), warn: keep('warn'), info: keep('info'), debug: keep('debug') } };
}

const visitor = { visitor_id: 'tutorial_visitor' };

test('snapshotPath: saved after a download, served during an outage at start, then revalidated', async () => {
  const snapshotPath = join(dir, 'state.snap');
  const first = fakeProvider(fake, { snapshotPath });
  await clientFor(first);
  const saved = readFileSync(snapshotPath);
  assert.equal(saved.subarray(0, 8).toString('latin1'), 'CFSNAP02');
  // Still encrypted on disk: the body is the CDN's, byte for byte.
  assert.ok(saved.includes(readFileSync(encryptedState)));
  await first.onClose();

  await fake.setFault('cdn', { type: 'status', code: 503 });
  const { lines, logger } = recordingLogger();
  const second = fakeProvider(fake, { snapshotPath, initializeTimeout: 500, logger });
  const client = await clientFor(second);
  assert.equal(client.providerStatus, ProviderStatus.READY);
  const details = await client.getStringDetails('tutorial-feature.title', 'fallback', visitor);
  assert.equal(details.value, 'Welcome to Confidence!');
  assert.equal(details.flagMetadata.stateFromSnapshot, true);
  assert.equal(details.flagMetadata.stateEtag, '"v1"');
  assert.ok(
    lines.some((l) => l.startsWith('warn: serving the last-known-good state snapshot') && l.includes('503')),
    lines.join('\n'),
  );

  // The CDN comes back and answers 304 to the snapshot's ETag: no longer "from snapshot".
  await fake.setFault('cdn', 'none');
  await until('the snapshot to be confirmed', async () => {
    const d = await client.getStringDetails('tutorial-feature.title', 'fallback', visitor);
    return d.flagMetadata.stateFromSnapshot === undefined;
  });
  const { cdn } = await fake.counters();
  assert.ok(cdn.not_modified >= 1, JSON.stringify(cdn));
  await second.onClose();
});

test('snapshotPath: a corrupt snapshot is ignored with a warning and initialize fails as without one', async () => {
  const snapshotPath = join(dir, 'corrupt.snap');
  writeFileSync(snapshotPath, Buffer.concat([Buffer.from('CFSNAP02'), Buffer.alloc(40, 7)]));
  await fake.setFault('cdn', { type: 'status', code: 503 });
  const { lines, logger } = recordingLogger();
  const p = fakeProvider(fake, { snapshotPath, initializeTimeout: 300, logger });
  await assert.rejects(OpenFeature.setProviderAndWait('corrupt-snapshot', p), /503/);
  assert.ok(
    lines.some((l) => l.startsWith('warn: ignoring the state snapshot') && l.includes('truncated')),
    lines.join('\n'),
  );
  const details = await OpenFeature.getClient('corrupt-snapshot').getBooleanDetails('tutorial-feature.x', false, {});
  assert.equal(details.errorCode, ErrorCode.PROVIDER_NOT_READY);
  await fake.setFault('cdn', 'none');
  await p.onClose();
});

test('initialState accepts a snapshot file, so a snapshot can be baked into an image', async () => {
  const snapshotPath = join(dir, 'baked.snap');
  const writer = fakeProvider(fake, { snapshotPath });
  await clientFor(writer);
  await writer.onClose();
  const offline = fakeProvider(fake, { offline: true, initialState: readFileSync(snapshotPath) });
  const client = await clientFor(offline);
  assert.equal(await client.getStringValue('tutorial-feature.title', 'fallback', visitor), 'Welcome to Confidence!');
  await offline.onClose();
  assert.throws(
    () =>
      fakeProvider(fake, {
        flagClientSecret: 'another-secret',
        offline: true,
        initialState: readFileSync(snapshotPath),
      }),
    (e) => e instanceof TypeError && /initialState: .*another client secret/.test(e.message),
  );
});

/** A forward proxy for plain http: rewrites absolute-form requests to origin form. */
async function startProxy(upstreamPort) {
  const seen = [];
  const server = createServer((client) => {
    let head = Buffer.alloc(0);
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      client.off('data', onData);
      const text = head.toString('latin1');
      const [line] = text.split('\r\n', 1);
      const [method, target, version] = line.split(' ');
      seen.push(`${method} ${target}`);
      const url = new URL(target);
      const upstream = connect(upstreamPort, '127.0.0.1', () => {
        upstream.write(`${method} ${url.pathname}${url.search} ${version}${text.slice(line.length)}`, 'latin1');
        client.pipe(upstream).pipe(client);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    };
    client.on('data', onData);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { seen, url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test('proxy: the state and the logs go through the configured proxy', async () => {
  const port = Number(new URL(fake.baseUrl).port);
  const proxy = await startProxy(port);
  const p = fakeProvider(fake, { proxy: proxy.url, userAgent: 'hardening-test/1.0' });
  const client = await clientFor(p);
  assert.equal(await client.getStringValue('tutorial-feature.title', 'fallback', visitor), 'Welcome to Confidence!');
  await p.onClose();
  proxy.close();
  assert.ok(
    proxy.seen.some((r) => r.startsWith(`GET ${fake.baseUrl}/`)),
    proxy.seen.join('\n'),
  );
  assert.ok(
    proxy.seen.some((r) => r.startsWith(`POST ${fake.baseUrl}/v1/`)),
    proxy.seen.join('\n'),
  );
  const logs = await fake.logs();
  const agent = logs.at(-1).headers['user-agent'];
  assert.match(agent, /^hardening-test\/1\.0 confidence-openfeature-provider-node\/\d+\.\d+\.\d+/);
});

test('network options are validated at construction', () => {
  assert.throws(() => fakeProvider(fake, { caCertificates: 'not pem' }), /caCertificates\[0\] must be PEM/);
  assert.throws(
    () => fakeProvider(fake, { proxy: 'socks9://user:hunter2@proxy:1080' }),
    (e) => e instanceof TypeError && /unsupported proxy scheme/.test(e.message) && !e.message.includes('hunter2'),
  );
  assert.throws(() => fakeProvider(fake, { connectTimeout: 0 }), RangeError);
  assert.throws(() => fakeProvider(fake, { snapshotPath: '' }), /snapshotPath must be a non-empty string/);
});

test('the client secret appears in no log line, error, status or metric, even when everything fails', async () => {
  await fake.setFault('cdn', { type: 'status', code: 503 });
  await fake.setFault('logs', { type: 'status', code: 500 });
  const { lines, logger } = recordingLogger();
  const snapshotPath = join(dir, 'missing', 'dir', 'state.snap');
  const p = fakeProvider(fake, { logger, initializeTimeout: 300, snapshotPath, requestTimeout: 500 });
  const failure = await OpenFeature.setProviderAndWait('secretless', p).catch((e) => e);
  assert.ok(failure instanceof Error);
  const client = OpenFeature.getClient('secretless');
  const details = await client.getBooleanDetails('tutorial-feature.enabled', false, visitor);
  const texts = [failure.message, String(failure.cause?.message), details.errorMessage, p.metrics(), ...lines];
  await fake.setFault('cdn', 'none');
  await until('the state', async () => (await client.getStringValue('tutorial-feature.title', 'x', visitor)) !== 'x');
  await client.getStringValue('tutorial-feature.title', 'x', visitor);
  await p.onClose();
  texts.push(p.metrics(), ...lines);
  await fake.setFault('logs', 'none');
  assert.ok(lines.length > 0, 'something was logged');
  for (const text of texts) {
    assert.ok(!String(text).includes(secret), `the secret leaked into: ${text}`);
    assert.ok(!String(text).includes(encryptionKey), `the key leaked into: ${text}`);
  }
});
