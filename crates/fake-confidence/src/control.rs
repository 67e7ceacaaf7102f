//! The JSON control protocol served on `POST /__control` when enabled (the binary's; the
//! protocol is documented at the top of `src/bin/fake-confidence.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::net::TcpStream;

use crate::http::{self, Request};
use crate::{base64, secret_digest, Counters, Fault, Route, Shared};

/// Something to do after the response went out (going down would otherwise cut it).
enum After {
    Nothing,
    DownFor(Route, Duration),
}

pub(crate) async fn serve(shared: &Arc<Shared>, request: Request, mut stream: TcpStream) {
    let outcome = if request.method != "POST" {
        Err("use POST with a JSON body".to_string())
    } else {
        match serde_json::from_slice::<Value>(&request.body) {
            Ok(command) => execute(shared, &command).await,
            Err(e) => Err(format!("body is not JSON: {e}")),
        }
    };
    let (status, body, after) = match outcome {
        Ok((mut reply, after)) => {
            reply.insert("ok".into(), Value::Bool(true));
            (200, Value::Object(reply), after)
        }
        Err(error) => (400, json!({ "ok": false, "error": error }), After::Nothing),
    };
    let headers = [("Content-Type", "application/json".to_string())];
    let _ = http::write_response(&mut stream, status, &headers, body.to_string().as_bytes()).await;
    drop(stream);
    if let After::DownFor(route, duration) = after {
        if shared.set_fault(route, Fault::Down).await.is_ok() {
            tokio::time::sleep(duration).await;
            // Best effort: if the port was taken meanwhile there is nobody to tell.
            let _ = shared.set_fault(route, Fault::None).await;
        }
    }
}

type Reply = (Map<String, Value>, After);

async fn execute(shared: &Arc<Shared>, command: &Value) -> Result<Reply, String> {
    let done = || Ok((Map::new(), After::Nothing));
    match str_field(command, "cmd")? {
        "ping" => done(),
        "set_state" => {
            let body =
                match (command.get("file").and_then(Value::as_str), command.get("base64").and_then(Value::as_str)) {
                    (Some(path), None) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?,
                    (None, Some(text)) => base64::decode(text)?,
                    _ => return Err("set_state needs exactly one of \"file\" or \"base64\"".into()),
                };
            let etag = command.get("etag").and_then(Value::as_str).unwrap_or_default();
            shared.set_state(digest_of(command)?, body, etag.to_string());
            done()
        }
        "remove_state" => {
            shared.states().remove(&digest_of(command)?);
            done()
        }
        "set_fault" => {
            let route = route_of(str_field(command, "route")?)?;
            let spec = command.get("fault").ok_or("set_fault needs \"fault\"")?;
            match parse_fault(spec)? {
                Parsed::Fault(fault) => {
                    shared.set_fault(route, fault).await.map_err(|e| format!("cannot re-bind: {e}"))?;
                    done()
                }
                Parsed::DownFor(duration) => Ok((Map::new(), After::DownFor(route, duration))),
            }
        }
        "counters" => {
            let counters = shared.counters();
            let of = |route| counters_json(counters.get(&route).copied().unwrap_or_default());
            let mut reply = Map::new();
            reply.insert("cdn".into(), of(Route::Cdn));
            reply.insert("logs".into(), of(Route::Logs));
            reply.insert("store".into(), of(Route::Store));
            Ok((reply, After::Nothing))
        }
        "logs" => {
            let logs: Vec<Value> = shared
                .logs()
                .iter()
                .map(|log| {
                    let headers: Map<String, Value> =
                        log.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), Value::String(v.clone()))).collect();
                    json!({ "path": log.path, "headers": headers, "body": base64::encode(&log.body) })
                })
                .collect();
            let mut reply = Map::new();
            reply.insert("logs".into(), Value::Array(logs));
            Ok((reply, After::Nothing))
        }
        "store_include" => {
            shared.store().include(str_field(command, "materialization")?, str_field(command, "unit")?);
            done()
        }
        "store_variants" => {
            let rows: Vec<Value> =
                shared.store().variants().into_iter().map(|(m, u, r, v)| json!([m, u, r, v])).collect();
            let mut reply = Map::new();
            reply.insert("variants".into(), Value::Array(rows));
            Ok((reply, After::Nothing))
        }
        "clear_logs" => {
            shared.logs().clear();
            done()
        }
        "reset" => {
            shared.logs().clear();
            shared.counters().clear();
            for route in [Route::Cdn, Route::Logs, Route::Store] {
                shared.set_fault(route, Fault::None).await.map_err(|e| format!("cannot re-bind: {e}"))?;
            }
            done()
        }
        other => Err(format!("unknown cmd {other:?}")),
    }
}

fn str_field<'a>(command: &'a Value, name: &str) -> Result<&'a str, String> {
    command.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing string field {name:?}"))
}

fn digest_of(command: &Value) -> Result<String, String> {
    match (command.get("digest").and_then(Value::as_str), command.get("secret").and_then(Value::as_str)) {
        (Some(digest), None) => Ok(digest.to_string()),
        (None, Some(secret)) => Ok(secret_digest(secret)),
        _ => Err("give exactly one of \"digest\" or \"secret\"".into()),
    }
}

fn route_of(name: &str) -> Result<Route, String> {
    match name {
        "cdn" => Ok(Route::Cdn),
        "logs" => Ok(Route::Logs),
        "store" => Ok(Route::Store),
        other => Err(format!("unknown route {other:?} (expected \"cdn\" or \"logs\")")),
    }
}

fn counters_json(c: Counters) -> Value {
    json!({ "requests": c.requests, "not_modified": c.not_modified, "faults_injected": c.faults_injected })
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Fault(Fault),
    /// `down` over the control channel must come back by itself: the channel goes down too.
    DownFor(Duration),
}

/// A fault from `"none"`-style shorthand or `{"type": …, …}`.
fn parse_fault(spec: &Value) -> Result<Parsed, String> {
    let (kind, fields) = match spec {
        Value::String(kind) => (kind.as_str(), &Map::new()),
        Value::Object(fields) => (str_field(spec, "type")?, fields),
        _ => return Err("fault must be a string or an object with \"type\"".into()),
    };
    let number = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("fault {kind:?} needs a non-negative integer {name:?}"))
    };
    let fault = match kind {
        "none" => Fault::None,
        "status" => Fault::Status(
            u16::try_from(number("code")?).ok().filter(|c| (100..=599).contains(c)).ok_or("code must be 100..599")?,
        ),
        "too_many_requests" => Fault::TooManyRequests { retry_after_secs: number("retry_after_secs")? },
        "slow" => Fault::Slow(Duration::from_millis(number("ms")?)),
        "body_over" => {
            Fault::BodyOver { max_bytes: usize::try_from(number("max_bytes")?).map_err(|_| "max_bytes is too large")? }
        }
        "truncate" => Fault::Truncate,
        "garbage" => Fault::Garbage,
        "reset" => Fault::Reset,
        "down" => return Ok(Parsed::DownFor(Duration::from_millis(number("for_ms")?))),
        "fail_next" => {
            let n = u32::try_from(number("n")?).map_err(|_| "n is too large")?;
            let inner = fields.get("fault").ok_or("fail_next needs an inner \"fault\"")?;
            match parse_fault(inner)? {
                Parsed::Fault(inner) => Fault::FailNext(n, Box::new(inner)),
                Parsed::DownFor(_) => return Err("fail_next cannot wrap down".into()),
            }
        }
        other => return Err(format!("unknown fault type {other:?}")),
    };
    Ok(Parsed::Fault(fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_json() {
        let parse = |v: Value| parse_fault(&v);
        assert_eq!(parse(json!("none")), Ok(Parsed::Fault(Fault::None)));
        assert_eq!(parse(json!({"type": "status", "code": 503})), Ok(Parsed::Fault(Fault::Status(503))));
        assert_eq!(
            parse(json!({"type": "too_many_requests", "retry_after_secs": 2})),
            Ok(Parsed::Fault(Fault::TooManyRequests { retry_after_secs: 2 }))
        );
        assert_eq!(
            parse(json!({"type": "slow", "ms": 1500})),
            Ok(Parsed::Fault(Fault::Slow(Duration::from_millis(1500))))
        );
        assert_eq!(parse(json!("truncate")), Ok(Parsed::Fault(Fault::Truncate)));
        assert_eq!(parse(json!({"type": "down", "for_ms": 200})), Ok(Parsed::DownFor(Duration::from_millis(200))));
        assert_eq!(
            parse(json!({"type": "fail_next", "n": 2, "fault": {"type": "status", "code": 500}})),
            Ok(Parsed::Fault(Fault::FailNext(2, Box::new(Fault::Status(500)))))
        );
        assert!(parse(json!("down")).is_err());
        assert!(parse(json!({"type": "status", "code": 42})).is_err());
        assert!(parse(json!({"type": "status"})).is_err());
        assert!(parse(json!({"type": "fail_next", "n": 1, "fault": {"type": "down", "for_ms": 1}})).is_err());
        assert!(parse(json!({"type": "teleport"})).is_err());
        assert!(parse(json!(3)).is_err());
    }
}
