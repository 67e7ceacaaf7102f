// The loopback fake Confidence (crates/fake-confidence/, a Rust binary): the state CDN for the
// start-up and state-swap workloads, and a log route that accepts uploads without keeping them.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// Not from workload.mjs: the swap worker imports this module and must not load the addon.
const root = fileURLToPath(new URL('../../', import.meta.url));

const candidates = [
  process.env.FAKE_CONFIDENCE_BIN,
  `${root}target/x86_64-unknown-linux-gnu/release/fake-confidence`,
  `${root}target/release/fake-confidence`,
].filter(Boolean);

/** The binary's path, building it once when no build is around. */
export function fakeBinary() {
  let bin = candidates.find((p) => existsSync(p));
  if (!bin) {
    console.log('building fake-confidence (cargo build --release -p fake-confidence)…');
    const r = spawnSync('cargo', ['build', '--release', '-p', 'fake-confidence'], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('cargo build -p fake-confidence failed');
    bin = candidates.find((p) => existsSync(p));
  }
  if (!bin) throw new Error('fake-confidence binary not found after building it');
  return bin;
}

export async function control(baseUrl, body) {
  const res = await fetch(`${baseUrl}/__control`, {
    method: 'POST',
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const json = await res.json();
  if (!json.ok) throw new Error(`fake-confidence: ${json.error}`);
  return json;
}

export async function startFake() {
  // A stdin pipe: the server exits when this process does, whatever happens to it.
  const child = spawn(fakeBinary(), [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`fake-confidence exited with ${code}`)));
    setTimeout(() => reject(new Error('fake-confidence did not start within 10 s')), 10_000).unref();
  });
  const baseUrl = `http://127.0.0.1:${JSON.parse(line).port}`;
  // Uploads answered 200 and dropped: millions of exposures would otherwise pile up in the fake.
  await control(baseUrl, { cmd: 'set_fault', route: 'logs', fault: { type: 'status', code: 200 } });
  return {
    baseUrl,
    setState: (secret, file, etag) => control(baseUrl, { cmd: 'set_state', secret, file, etag }),
    stop: () => {
      child.stdin.end();
      child.kill();
    },
  };
}
