// Starts the repo's `fake-confidence` binary (fake_confidence/, built by `npm test`) on
// 127.0.0.1 and talks to its control endpoint. One implementation serves Rust and Node tests.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

const bin = process.env.FAKE_CONFIDENCE_BIN;

export async function startFakeConfidence() {
  if (!bin || !existsSync(bin)) {
    throw new Error(`FAKE_CONFIDENCE_BIN=${bin}: run the suites with \`npm test\`, which builds it`);
  }
  // stdin is a pipe: the server exits when it closes, so a crashed test leaves nothing behind.
  const child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`fake-confidence exited with ${code}`)));
    setTimeout(() => reject(new Error('fake-confidence did not report its port within 10 s')), 10_000).unref();
  });
  const { port } = JSON.parse(line);
  const baseUrl = `http://127.0.0.1:${port}`;
  const control = async (body) => {
    // Bounded: a test never hangs on its own fake.
    const signal = AbortSignal.timeout(5000);
    const res = await fetch(`${baseUrl}/__control`, { method: 'POST', body: JSON.stringify(body), signal });
    const json = await res.json();
    if (!json.ok) throw new Error(`fake-confidence: ${json.error}`);
    return json;
  };
  return {
    baseUrl,
    control,
    setState: (secret, file, etag = '"v1"') => control({ cmd: 'set_state', secret, file, etag }),
    setStateBytes: (secret, bytes, etag) =>
      control({ cmd: 'set_state', secret, base64: Buffer.from(bytes).toString('base64'), etag }),
    setFault: (route, fault) => control({ cmd: 'set_fault', route, fault }),
    counters: () => control({ cmd: 'counters' }),
    logs: async () => (await control({ cmd: 'logs' })).logs,
    stop: () => {
      child.stdin.end();
      child.kill();
    },
  };
}
