//! The host's own counters as Prometheus text, followed by the resolver's snapshot (latency
//! histogram, resolves by reason, guest memory) so one scrape shows both.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::engine::EngineMetrics;
use crate::log_upload::UploadStats;
use crate::state_sync::SyncSnapshot;

/// `(name, help, kind, value)` rows, rendered in order.
fn rows(
    sync: &SyncSnapshot,
    upload: &UploadStats,
    engine: &EngineMetrics,
) -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let age = sync.last_success.and_then(|t| t.elapsed().ok()).map(|d| d.as_secs_f64()).unwrap_or(-1.0);
    let u = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    vec![
        ("confidence_state_fetches_total", "CDN state requests sent.", "counter", sync.fetches as f64),
        ("confidence_state_not_modified_total", "CDN answers 304 Not Modified.", "counter", sync.not_modified as f64),
        ("confidence_state_updates_total", "States fetched and applied.", "counter", sync.updates as f64),
        ("confidence_state_failures_total", "Failed fetches or rejected states.", "counter", sync.failures as f64),
        ("confidence_state_age_seconds", "Seconds since the last successful fetch (-1: none yet).", "gauge", age),
        ("confidence_state_swaps_total", "States loaded into the resolver.", "counter", engine.state_loads as f64),
        (
            "confidence_log_batches_sent_total",
            "Log batches accepted by Confidence.",
            "counter",
            u(&upload.batches_sent),
        ),
        ("confidence_log_bytes_sent_total", "Bytes of log batches accepted.", "counter", u(&upload.bytes_sent)),
        ("confidence_log_upload_failures_total", "Failed log upload attempts.", "counter", u(&upload.failed_attempts)),
        (
            "confidence_log_batches_dropped_total",
            "Log batches dropped because the backlog was full.",
            "counter",
            u(&upload.dropped_batches),
        ),
        ("confidence_log_bytes_dropped_total", "Bytes of dropped log batches.", "counter", u(&upload.dropped_bytes)),
        (
            "confidence_resolver_traps_total",
            "Resolver instances that trapped or timed out and were replaced.",
            "counter",
            engine.traps as f64,
        ),
        (
            "confidence_resolver_recycles_total",
            "Resolver instances replaced for their memory size.",
            "counter",
            engine.recycles as f64,
        ),
        ("confidence_resolver_instances", "Resolver instances in the pool.", "gauge", engine.instances as f64),
        (
            "confidence_guest_memory_bytes",
            "Linear memory of all resolver instances.",
            "gauge",
            engine.guest_memory_bytes as f64,
        ),
    ]
}

/// Prometheus text exposition of the host counters, then `resolver_text` verbatim.
pub fn render(sync: &SyncSnapshot, upload: &UploadStats, engine: &EngineMetrics, resolver_text: &str) -> String {
    let mut out = String::new();
    for (name, help, kind, value) in rows(sync, upload, engine) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out.push_str(resolver_text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let sync = SyncSnapshot { fetches: 3, not_modified: 2, ..Default::default() };
        let upload = UploadStats::default();
        upload.dropped_batches.store(4, Ordering::Relaxed);
        let engine = EngineMetrics { guest_memory_bytes: 1 << 20, instances: 2, ..Default::default() };
        let text = render(&sync, &upload, &engine, "resolver_line 1\n");
        assert!(text.contains("# TYPE confidence_state_fetches_total counter\nconfidence_state_fetches_total 3\n"));
        assert!(text.contains("confidence_log_batches_dropped_total 4\n"));
        assert!(text.contains("confidence_guest_memory_bytes 1048576\n"));
        assert!(text.contains("confidence_state_age_seconds -1\n"));
        assert!(text.ends_with("resolver_line 1\n"));
    }
}
