//! The host's own counters as Prometheus text, followed by the resolver's snapshot (latency
//! histogram, resolves by reason, guest memory) so one scrape shows both.

use std::collections::HashMap;
use std::fmt::Write;

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
    let u = |c: u64| c as f64;
    vec![
        ("confidence_state_fetches_total", "CDN state requests sent.", "counter", sync.fetches as f64),
        ("confidence_state_not_modified_total", "CDN answers 304 Not Modified.", "counter", sync.not_modified as f64),
        ("confidence_state_updates_total", "States fetched and applied.", "counter", sync.updates as f64),
        ("confidence_state_failures_total", "Failed fetches or rejected states.", "counter", sync.failures as f64),
        ("confidence_state_age_seconds", "Seconds since the last successful fetch (-1: none yet).", "gauge", age),
        ("confidence_state_swaps_total", "States loaded into the resolver.", "counter", engine.state_loads as f64),
        (
            "confidence_log_batches_enqueued_total",
            "Log batches produced by the resolver, plus one per split (each is later sent, dropped, rejected or still queued).",
            "counter",
            u(upload.batches_enqueued),
        ),
        (
            "confidence_log_batches_sent_total",
            "Log batches accepted by Confidence (or handed to takeFlagLogs).",
            "counter",
            u(upload.batches_sent),
        ),
        ("confidence_log_bytes_sent_total", "Bytes of log batches accepted.", "counter", u(upload.bytes_sent)),
        ("confidence_log_upload_failures_total", "Failed log upload attempts.", "counter", u(upload.failed_attempts)),
        (
            "confidence_log_batches_dropped_total",
            "Log batches dropped because the backlog was full, or undelivered at close.",
            "counter",
            u(upload.dropped_batches),
        ),
        (
            "confidence_log_batches_rejected_total",
            "Log batches Confidence refused as malformed or too large (not retried).",
            "counter",
            u(upload.rejected_batches),
        ),
        (
            "confidence_log_batches_split_total",
            "Log batches split in halves after a 413.",
            "counter",
            u(upload.split_batches),
        ),
        ("confidence_log_batches_queued", "Log batches waiting for upload.", "gauge", u(upload.queued_batches)),
        ("confidence_log_bytes_dropped_total", "Bytes of dropped log batches.", "counter", u(upload.dropped_bytes)),
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

/// Prometheus text exposition of the host counters, then the samples of `resolver_text` with
/// each metric family declared once (see [`merge_families`]).
pub fn render(sync: &SyncSnapshot, upload: &UploadStats, engine: &EngineMetrics, resolver_text: &str) -> String {
    let mut out = String::new();
    for (name, help, kind, value) in rows(sync, upload, engine) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out.push_str(&merge_families(resolver_text));
    out
}

#[derive(Default)]
struct Family<'a> {
    help: Option<&'a str>,
    kind: Option<&'a str>,
    samples: Vec<&'a str>,
}

/// Every instance of the pool reports the same families, so their snapshots put side by side
/// declare each family once per instance; Prometheus rejects a scrape that repeats a `# HELP`
/// or `# TYPE` or splits a family's samples. This keeps the first header of each family and
/// gathers its samples (a histogram's `_bucket`/`_sum`/`_count` included) under it, families
/// in order of first appearance. Other comments and blank lines are dropped.
fn merge_families(text: &str) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, Family<'_>> = HashMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        let header =
            line.strip_prefix("# HELP ").map(|r| (true, r)).or(line.strip_prefix("# TYPE ").map(|r| (false, r)));
        let (name, header) = match header {
            Some((is_help, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                current = Some(name);
                (name, Some((is_help, line)))
            }
            None if line.starts_with('#') || line.trim().is_empty() => continue,
            None => {
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                let belongs = |family: &&str| {
                    sample.strip_prefix(*family).is_some_and(|s| ["", "_bucket", "_sum", "_count"].contains(&s))
                };
                (current.filter(belongs).unwrap_or(sample), None)
            }
        };
        let family = families.entry(name).or_insert_with(|| {
            order.push(name);
            Family::default()
        });
        match header {
            Some((true, line)) => family.help = family.help.or(Some(line)),
            Some((false, line)) => family.kind = family.kind.or(Some(line)),
            None => family.samples.push(line),
        }
    }
    let mut out = String::new();
    for name in order {
        let family = &families[name];
        for line in family.help.iter().chain(family.kind.iter()).chain(family.samples.iter()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        let sync = SyncSnapshot { fetches: 3, not_modified: 2, ..Default::default() };
        let upload = UploadStats { dropped_batches: 4, batches_enqueued: 9, ..Default::default() };
        let engine = EngineMetrics { guest_memory_bytes: 1 << 20, instances: 2, ..Default::default() };
        let text = render(&sync, &upload, &engine, "resolver_line 1\n");
        assert!(text.contains("# TYPE confidence_state_fetches_total counter\nconfidence_state_fetches_total 3\n"));
        assert!(text.contains("confidence_log_batches_dropped_total 4\n"));
        assert!(text.contains("confidence_log_batches_enqueued_total 9\n"));
        assert!(text.contains("confidence_guest_memory_bytes 1048576\n"));
        assert!(text.contains("confidence_state_age_seconds -1\n"));
        assert!(text.ends_with("resolver_line 1\n"));
    }

    #[test]
    fn each_resolver_family_is_declared_once_with_all_its_samples() {
        let instance = |i: u32| {
            format!(
                "# HELP g_bytes Memory.\n# TYPE g_bytes gauge\ng_bytes{{id=\"{i}\"}} {i}\n\
                 # HELP lat Latency.\n# TYPE lat histogram\nlat_bucket{{id=\"{i}\",le=\"1\"}} 1\n\
                 lat_sum{{id=\"{i}\"}} 1\nlat_count{{id=\"{i}\"}} 1\n\n"
            )
        };
        let merged = merge_families(&(instance(0) + &instance(1)));
        assert_eq!(
            merged,
            "# HELP g_bytes Memory.\n# TYPE g_bytes gauge\ng_bytes{id=\"0\"} 0\ng_bytes{id=\"1\"} 1\n\
             # HELP lat Latency.\n# TYPE lat histogram\nlat_bucket{id=\"0\",le=\"1\"} 1\nlat_sum{id=\"0\"} 1\n\
             lat_count{id=\"0\"} 1\nlat_bucket{id=\"1\",le=\"1\"} 1\nlat_sum{id=\"1\"} 1\nlat_count{id=\"1\"} 1\n"
        );
        // Undeclared samples form their own families; an empty snapshot adds nothing.
        assert_eq!(merge_families("a 1\nb 2\na 3\n"), "a 1\na 3\nb 2\n");
        assert_eq!(merge_families(""), "");
    }
}
