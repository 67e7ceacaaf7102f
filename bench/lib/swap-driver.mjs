// Worker thread: flips the fake CDN between two states every `periodMs` (a new ETag each time),
// off the main thread, whose event loop a tight evaluation loop keeps busy.
import { parentPort, workerData } from 'node:worker_threads';

import { control } from './fake-cdn.mjs';

const { baseUrl, secret, files, periodMs } = workerData;
let flips = 0;
let stopping = false;
parentPort.on('message', (m) => {
  if (m === 'stop') stopping = true;
});

let next = performance.now();
while (!stopping) {
  next += periodMs;
  await control(baseUrl, {
    cmd: 'set_state',
    secret,
    file: files[(flips + 1) % files.length],
    etag: `"flip-${flips}"`,
  });
  flips++;
  const wait = next - performance.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}
parentPort.postMessage(flips);
