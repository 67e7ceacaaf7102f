//! Resolve logging off the evaluation path, for the native engine.
//!
//! Inside every resolve the crate calls its resolve logger, which derives the context's schema
//! (most of a small resolve's time). This sink instead keeps an owned copy of that call and a
//! worker thread makes the very same call on the very same logger later: the logs' content is
//! unchanged, only when it is aggregated moves. A flush first drains the queue (and waits for
//! the batch the worker holds), so it contains every resolve logged before it. When the queue
//! is full the resolve is logged inline rather than dropped. The one visible difference: past
//! 50 distinct schemas per credential and flush, which schemas the crate's sample keeps is
//! random (docs/resolver.md, "Resolve logs and context schema") and now drawn on another thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use confidence_resolver::proto::google::Struct;
use confidence_resolver::{Client, ResolvedValue, ResolverState};
use confidence_resolver_core::{log_resolve_to, CoreResolveLogger, ResolveLogSink};

/// One resolve's logger call, owned.
struct Job {
    /// Borrow from `state` (checked in [`Job::capture`]); declared before it, so dropped first.
    values: Vec<ResolvedValue<'static>>,
    client: &'static Client,
    context: Struct,
    resolve_id: String,
    /// Never read: keeps what `values` and `client` point into alive and unchanged.
    _state: Arc<ResolverState>,
}

impl Job {
    /// `None` when `values` or `client` do not live inside `state` (then only an inline call
    /// is sound).
    #[allow(unsafe_code)] // see the SAFETY notes and `tests::resolved_value_shape_is_the_reviewed_one`
    fn capture(
        state: &Arc<ResolverState>,
        resolve_id: &str,
        context: &Struct,
        values: &[ResolvedValue<'_>],
        client: &Client,
    ) -> Option<Job> {
        let inside = values.iter().all(|v| state.flags.get(&v.flag.name).is_some_and(|f| std::ptr::eq(f, v.flag)))
            && state.secrets.values().any(|c| std::ptr::eq(c, client));
        if !inside {
            return None;
        }
        let values = values
            .iter()
            .map(|v| {
                // SAFETY: only the lifetime changes. Every `flag` reference points into
                // `state.flags` (checked above); `state` is an immutable `ResolverState`
                // behind an `Arc` the job owns and drops last, so the references stay valid
                // for as long as the job exists, and they never leave it with 'static.
                unsafe { std::mem::transmute::<ResolvedValue<'_>, ResolvedValue<'static>>(v.clone()) }
            })
            .collect();
        // SAFETY: as above, `client` is an entry of `state.secrets` (checked above).
        let client = unsafe { &*(client as *const Client) };
        Some(Job {
            values,
            client,
            context: context.clone(),
            resolve_id: resolve_id.to_string(),
            _state: state.clone(),
        })
    }

    fn log(&self, logger: &CoreResolveLogger) {
        log_resolve_to(logger, &self.resolve_id, &self.context, &self.values, self.client);
    }
}

/// Jobs that make the producer wake a sleeping worker. Waking a thread is a futex syscall, as
/// costly as a small resolve: per job it would double an evaluation's cost whenever the worker
/// keeps up and sleeps between jobs.
const WAKE_BATCH: usize = 64;
/// Below a batch, the worker looks at the queue on its own this often (flushes drain the queue
/// themselves, so this only bounds how long jobs wait, never what a flush contains).
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// The worker sleeps; a full batch wakes it early.
    idle: bool,
    /// The worker is logging a batch it took out of `jobs`.
    busy: bool,
    /// Batches the worker has finished, so a drain can wait for the one in progress.
    batches: u64,
    stop: bool,
}

/// How resolves reached the logger, for metrics and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Handed to the worker.
    pub(crate) deferred: AtomicU64,
    /// Logged inline instead: the queue was full (or the call could not be captured).
    pub(crate) inline: AtomicU64,
}

struct Shared {
    logger: Arc<CoreResolveLogger>,
    capacity: usize,
    counters: Arc<Counters>,
    queue: Mutex<Queue>,
    work: Condvar,
    progress: Condvar,
    worker: Mutex<Option<JoinHandle<()>>>,
}

/// Nothing behind these locks is left half-changed by a panic, so a poisoned lock is usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Logs `jobs`; a panic inside the crate costs that job's log, never the thread.
    fn log(&self, jobs: Vec<Job>) {
        for job in jobs {
            let _ = catch_unwind(AssertUnwindSafe(|| job.log(&self.logger)));
        }
    }

    /// Ends the worker thread and logs what it left queued on the calling thread. Afterwards
    /// every resolve is logged inline, so a stopped sink loses nothing. Idempotent.
    fn stop(&self) {
        lock(&self.queue).stop = true;
        self.work.notify_all();
        let worker = lock(&self.worker).take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
        let jobs = std::mem::take(&mut lock(&self.queue).jobs);
        self.log(jobs);
    }

    fn run(&self) {
        loop {
            let batch = {
                let mut q = lock(&self.queue);
                while q.jobs.len() < WAKE_BATCH && !q.stop {
                    q.idle = true;
                    let (guard, waited) = self.work.wait_timeout(q, POLL).unwrap_or_else(|p| p.into_inner());
                    q = guard;
                    if waited.timed_out() && !q.jobs.is_empty() {
                        break;
                    }
                }
                q.idle = false;
                if q.stop {
                    return;
                }
                q.busy = true;
                std::mem::take(&mut q.jobs)
            };
            self.log(batch);
            let mut q = lock(&self.queue);
            q.busy = false;
            q.batches = q.batches.wrapping_add(1);
            self.progress.notify_all();
        }
    }
}

/// A [`ResolveLogSink`] with one worker thread and a bounded queue.
pub(crate) struct DeferredResolveLog {
    shared: Arc<Shared>,
}

/// Stops a [`DeferredResolveLog`]'s thread from outside the resolver that owns the sink (a
/// closed provider must not keep a thread until it is garbage-collected).
#[derive(Clone)]
pub(crate) struct ResolveLogStopper(Arc<Shared>);

impl ResolveLogStopper {
    pub(crate) fn stop(&self) {
        self.0.stop();
    }

    /// Whether the worker thread is still alive.
    pub(crate) fn running(&self) -> bool {
        lock(&self.0.worker).as_ref().is_some_and(|w| !w.is_finished())
    }
}

impl DeferredResolveLog {
    pub(crate) fn spawn(
        logger: Arc<CoreResolveLogger>,
        capacity: usize,
        counters: Arc<Counters>,
    ) -> std::io::Result<(Self, ResolveLogStopper)> {
        let shared = Arc::new(Shared {
            logger,
            capacity: capacity.max(1),
            counters,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            progress: Condvar::new(),
            worker: Mutex::new(None),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new().name("confidence-resolve-log".into()).spawn(move || shared.run())?
        };
        *lock(&shared.worker) = Some(worker);
        Ok((DeferredResolveLog { shared: shared.clone() }, ResolveLogStopper(shared)))
    }
}

impl ResolveLogSink for DeferredResolveLog {
    fn defer(
        &self,
        state: &Arc<ResolverState>,
        resolve_id: &str,
        context: &Struct,
        values: &[ResolvedValue<'_>],
        client: &Client,
    ) -> bool {
        let inline = || {
            self.shared.counters.inline.fetch_add(1, Ordering::Relaxed);
            false
        };
        let Some(job) = Job::capture(state, resolve_id, context, values, client) else { return inline() };
        let mut q = lock(&self.shared.queue);
        if q.stop || q.jobs.len() >= self.shared.capacity {
            drop(q);
            return inline();
        }
        q.jobs.push(job);
        if q.idle && q.jobs.len() >= WAKE_BATCH {
            q.idle = false;
            self.shared.work.notify_one();
        }
        drop(q);
        self.shared.counters.deferred.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn drain(&self) {
        let (jobs, running) = {
            let mut q = lock(&self.shared.queue);
            (std::mem::take(&mut q.jobs), q.busy.then_some(q.batches))
        };
        // The flushing thread logs what is still queued itself, next to the worker.
        self.shared.log(jobs);
        if let Some(batch) = running {
            let mut q = lock(&self.shared.queue);
            while q.batches == batch {
                q = self.shared.progress.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

impl Drop for DeferredResolveLog {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

#[cfg(test)]
mod shape {
    use confidence_resolver::ResolvedValue;

    /// `Job::capture` gives `ResolvedValue`s a `'static` lifetime, which is sound only while a
    /// value borrows nothing but its `flag` (reviewed for `confidence_resolver` 0.26.1). An
    /// upgrade that adds or changes a field changes the layout and fails here: review the
    /// lifetime extension again before updating these figures.
    #[test]
    fn resolved_value_shape_is_the_reviewed_one() {
        let lock = include_str!("../../../../Cargo.lock");
        let pinned = lock.split("[[package]]").find(|p| p.contains("name = \"confidence_resolver\"")).unwrap_or("");
        assert!(pinned.contains(&format!("version = \"{}\"", crate::RESOLVER_CRATE_VERSION)), "{pinned}");
        assert_eq!(crate::RESOLVER_CRATE_VERSION, "0.26.1");
        assert_eq!(std::mem::size_of::<ResolvedValue<'static>>(), 208);
    }
}
