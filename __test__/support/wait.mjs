// Waiting in tests: for a condition, for a promise or a child process within a bound, and (only
// where time itself is what a test is about) for time to pass.
import { setTimeout as sleep } from 'node:timers/promises';

/** Only for letting time pass on purpose (a quiet period, a window to count in), never to order things. */
export { sleep };

/**
 * Resolves once `cond()` (sync or async) holds, polling every 25 ms; fails with `what` (a string,
 * or a function describing the state at the time) after `ms`. Assertions in `cond` fail at once.
 */
export async function until(what, cond, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'function' ? what() : what}`);
    }
    await sleep(25);
  }
}

/** Bounds an await: a hung promise fails its test instead of stalling the run. */
export async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The exit code of `child`, which must end by itself: killed and failed after `ms`. */
export function exitOf(child, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the process did not exit by itself within ${ms / 1000} s`));
    }, ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}
