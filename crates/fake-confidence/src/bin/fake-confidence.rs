//! `fake-confidence`: the fake Confidence server for Node tests.
//!
//! Usage: `fake-confidence [--port N] [--ignore-stdin]`
//!
//! * Listens on 127.0.0.1 (`--port 0`, the default, picks a free port) and prints exactly one
//!   line of JSON to stdout once ready: `{"port": N}`.
//! * Exits when its stdin reaches EOF, so a crashed test runner never leaves it behind: spawn
//!   it with a stdin *pipe* (Node: `stdio: ['pipe', 'pipe', 'inherit']`) and close or kill it
//!   when done. `--ignore-stdin` disables this (then stop it with a signal).
//!
//! Served routes (see the library docs): `GET /<sha256hex(secret)>[.enc]` (the CDN, with
//! `ETag` / `If-None-Match` → `304`), `POST /v1/clientFlagLogs:write` and
//! `POST /v1/flagLogs:ingest` (log uploads: stored, answered `200` with an empty body).
//! Every response carries `Connection: close`.
//!
//! Control protocol: `POST /__control` on the same port with a JSON object body. The answer is
//! `200 {"ok": true, …}` or `400 {"ok": false, "error": "…"}`. Control requests are never
//! faulted or counted. Commands (`cmd`):
//!
//! | Command | Fields | Effect / reply |
//! |---|---|---|
//! | `ping` | — | `{"ok": true}` |
//! | `set_state` | `digest` (64 hex) **or** `secret`; `file` (path) **or** `base64`; `etag` (optional, `""` = none) | serve these bytes at `/<digest>` and `/<digest>.enc` |
//! | `remove_state` | `digest` or `secret` | `404` for that path afterwards |
//! | `set_fault` | `route`: `"cdn"`, `"logs"` or `"store"`; `fault` (below) | applies to later requests on that route |
//! | `counters` | — | `{"ok": true, "cdn": C, "logs": C, "store": C}`, `C = {"requests", "not_modified", "faults_injected"}` |
//! | `store_include` | `materialization`, `unit` | puts the unit into that materialized segment of the remote store |
//! | `store_variants` | — | `{"ok": true, "variants": [[materialization, unit, rule, variant], …]}` written to the remote store |
//! | `logs` | — | `{"ok": true, "logs": [{"path", "headers": {lowercased name: value}, "body": base64}]}` (accepted uploads, in order) |
//! | `clear_logs` | — | forget received logs |
//! | `reset` | — | clear logs and counters, set both routes' faults to `none` |
//!
//! Faults: a string for those without parameters, else an object with `type`:
//! `"none"`, `{"type": "status", "code": 503}`, `{"type": "too_many_requests",
//! "retry_after_secs": 2}` (429 + `Retry-After`), `{"type": "slow", "ms": 1500}` (delay, then
//! normal), `"truncate"` (full `Content-Length`, half the body, close), `"garbage"` (200 with
//! 1 KiB of random bytes), `"reset"` (TCP reset, no response), `{"type": "down", "for_ms":
//! 2000}` (the reply is sent, then the listener closes — connections are refused, the control
//! endpoint included — and re-binds the same port after `for_ms`, with that route's fault back
//! to `none`), `{"type": "fail_next", "n": 2, "fault": <fault>}` (the inner fault for the next
//! `n` requests, then `none`).
//!
//! Example: `curl -s localhost:$PORT/__control -d '{"cmd":"set_fault","route":"cdn","fault":"reset"}'`

use std::io::{Read, Write};
use std::process::ExitCode;

use fake_confidence::{FakeConfidence, Options};

fn usage() -> ExitCode {
    eprintln!("usage: fake-confidence [--port N] [--ignore-stdin]");
    ExitCode::from(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut options = Options { port: 0, control: true };
    let mut watch_stdin = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(port) => options.port = port,
                None => return usage(),
            },
            "--ignore-stdin" => watch_stdin = false,
            _ => return usage(),
        }
    }

    let server = match FakeConfidence::start_with(options).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("fake-confidence: cannot listen on 127.0.0.1:{}: {e}", options.port);
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{{\"port\": {}}}", server.port()).and_then(|_| stdout.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    drop(stdout);

    if watch_stdin {
        // A plain thread: blocking reads on stdin, exit at EOF or on a read error.
        std::thread::spawn(|| {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 1024];
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    }
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
