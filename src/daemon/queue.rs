//! One keyed work queue for everything the daemon does on its own (in the manner of
//! kube-runtime's controller): triggers — the poll timer, webhooks, ChatOps comments, the file
//! watch, the drift timer — only enqueue a job under a key (`branch`, `pr/<n>`, `drift`, …).
//!
//! - A key never runs twice at once.
//! - A job enqueued while its key runs waits behind it and runs once more afterwards; jobs
//!   enqueued while one waits merge into it ([`Job::merge`]), so a burst costs one rerun.
//! - At most a fixed number of keys run at once; the others wait their turn.
//! - Every run is a tracked task: [`WorkQueue::shutdown`] lets running jobs finish within a
//!   grace period, cancels the rest, and drops what was still waiting.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

/// A unit of work of the queue.
pub trait Job: Send + 'static {
    /// What is serialized and coalesced on.
    type Key: Clone + Eq + Hash + Display + Send + Sync + 'static;

    /// The key of this job.
    fn key(&self) -> Self::Key;

    /// Merges `newer`, enqueued under the same key, into this waiting job.
    fn merge(self, newer: Self) -> Self;
}

/// The future of one run of a job.
pub type Run = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one job.
pub type Handler<J> = Arc<dyn Fn(J) -> Run + Send + Sync>;

/// What became of an enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The key was idle: the job runs at once, or when a slot frees up.
    Started,
    /// The key is running or waiting: the job was merged into the one waiting behind it.
    Coalesced,
    /// The queue is shut down (or has no runtime to run on): the job was dropped.
    Refused,
}

/// The keyed work queue; see the module documentation.
pub struct WorkQueue<J: Job> {
    inner: Arc<Inner<J>>,
}

struct Inner<J: Job> {
    handler: Handler<J>,
    permits: Semaphore,
    runtime: Option<tokio::runtime::Handle>,
    state: Mutex<State<J>>,
}

struct State<J: Job> {
    /// Keys with a task, each with the job waiting behind its run (if any).
    keys: HashMap<J::Key, Option<J>>,
    tasks: JoinSet<()>,
    closed: bool,
}

impl<J: Job> std::fmt::Debug for WorkQueue<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state();
        f.debug_struct("WorkQueue")
            .field("keys", &state.keys.len())
            .field("closed", &state.closed)
            .finish_non_exhaustive()
    }
}

impl<J: Job> Inner<J> {
    fn state(&self) -> MutexGuard<'_, State<J>> {
        // Plain bookkeeping behind this lock: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<J: Job> WorkQueue<J> {
    /// A queue running at most `max_concurrent` (at least 1) keys at once with `handler`.
    /// Jobs run on the current tokio runtime, or (enqueued from elsewhere, a file watcher's
    /// thread say) on the one current when the queue was made.
    pub fn new(max_concurrent: usize, handler: Handler<J>) -> WorkQueue<J> {
        WorkQueue {
            inner: Arc::new(Inner {
                handler,
                permits: Semaphore::new(max_concurrent.max(1)),
                runtime: tokio::runtime::Handle::try_current().ok(),
                state: Mutex::new(State {
                    keys: HashMap::new(),
                    tasks: JoinSet::new(),
                    closed: false,
                }),
            }),
        }
    }

    /// Enqueues `job` under its key.
    pub fn enqueue(&self, job: J) -> Enqueued {
        let key = job.key();
        let mut state = self.inner.state();
        if state.closed {
            tracing::debug!(key = %key, "work queue shut down: job dropped");
            return Enqueued::Refused;
        }
        if let Some(waiting) = state.keys.get_mut(&key) {
            *waiting = Some(match waiting.take() {
                Some(old) => old.merge(job),
                None => job,
            });
            return Enqueued::Coalesced;
        }
        let Some(runtime) = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| self.inner.runtime.clone())
        else {
            tracing::warn!(key = %key, "no runtime to run work on: job dropped");
            return Enqueued::Refused;
        };
        state.keys.insert(key.clone(), Some(job));
        while state.tasks.try_join_next().is_some() {}
        let inner = Arc::clone(&self.inner);
        state.tasks.spawn_on(run_key(inner, key), &runtime);
        Enqueued::Started
    }

    /// Keys running or waiting.
    pub fn pending(&self) -> usize {
        self.inner.state().keys.len()
    }

    /// Stops the queue: nothing new is accepted or started, jobs still waiting are dropped,
    /// running jobs may finish within `grace` and are cancelled after it. Returns how many
    /// were cancelled.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let mut tasks = {
            let mut state = self.inner.state();
            state.closed = true;
            std::mem::take(&mut state.tasks)
        };
        // Tasks waiting for a slot give up at once.
        self.inner.permits.close();
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        let left = tasks.len();
        if drained.is_err() {
            tracing::info!(jobs = left, "cancelling work still running");
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        left
    }
}

/// Forgets its key when the task running it ends abnormally (a panic, a cancellation), so
/// the key can run again.
struct KeyGuard<J: Job> {
    inner: Arc<Inner<J>>,
    key: J::Key,
    armed: bool,
}

impl<J: Job> Drop for KeyGuard<J> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.state().keys.remove(&self.key);
        }
    }
}

/// The one task of `key`: runs its waiting job, then again while one was enqueued meanwhile.
async fn run_key<J: Job>(inner: Arc<Inner<J>>, key: J::Key) {
    let mut guard = KeyGuard {
        inner: Arc::clone(&inner),
        key: key.clone(),
        armed: true,
    };
    loop {
        // Closed only on shutdown: then nothing more starts.
        let Ok(permit) = inner.permits.acquire().await else {
            return;
        };
        let job = {
            let mut state = inner.state();
            let job = if state.closed {
                None
            } else {
                state.keys.get_mut(&key).and_then(Option::take)
            };
            match job {
                Some(job) => job,
                None => {
                    state.keys.remove(&key);
                    guard.armed = false;
                    return;
                }
            }
        };
        let span = tracing::info_span!("work", key = %key);
        (inner.handler)(job).instrument(span).await;
        drop(permit);
        let mut state = inner.state();
        let again = !state.closed && matches!(state.keys.get(&key), Some(Some(_)));
        if !again {
            state.keys.remove(&key);
            guard.armed = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A job under `key` carrying the values merged into it.
    #[derive(Debug)]
    struct Item {
        key: &'static str,
        values: Vec<u32>,
    }

    impl Job for Item {
        type Key = &'static str;
        fn key(&self) -> &'static str {
            self.key
        }
        fn merge(mut self, newer: Self) -> Self {
            self.values.extend(newer.values);
            self
        }
    }

    fn item(key: &'static str, value: u32) -> Item {
        Item {
            key,
            values: vec![value],
        }
    }

    /// What the jobs saw: runs per key, the most running at once overall and per key.
    #[derive(Default)]
    struct Record {
        runs: Mutex<Vec<(&'static str, Vec<u32>)>>,
        running: AtomicUsize,
        most: AtomicUsize,
        per_key: Mutex<HashMap<&'static str, usize>>,
        overlap: AtomicUsize,
    }

    /// A queue whose jobs each take `duration`.
    fn queue(max: usize, duration: Duration) -> (WorkQueue<Item>, Arc<Record>) {
        let record = Arc::new(Record::default());
        let seen = record.clone();
        let handler: Handler<Item> = Arc::new(move |item: Item| {
            let seen = seen.clone();
            Box::pin(async move {
                let now = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                {
                    let mut per_key = seen.per_key.lock().expect("per key");
                    let n = per_key.entry(item.key).or_default();
                    *n += 1;
                    if *n > 1 {
                        seen.overlap.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(duration).await;
                *seen
                    .per_key
                    .lock()
                    .expect("per key")
                    .entry(item.key)
                    .or_default() -= 1;
                seen.running.fetch_sub(1, Ordering::SeqCst);
                seen.runs
                    .lock()
                    .expect("runs")
                    .push((item.key, item.values));
            })
        });
        (WorkQueue::new(max, handler), record)
    }

    async fn settle(queue: &WorkQueue<Item>) {
        while queue.pending() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn enqueues_during_a_run_coalesce_into_exactly_one_rerun() {
        let (queue, record) = queue(4, Duration::from_millis(300));
        assert_eq!(queue.enqueue(item("pr/1", 1)), Enqueued::Started);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for v in 2..=6 {
            assert_eq!(queue.enqueue(item("pr/1", v)), Enqueued::Coalesced);
        }
        settle(&queue).await;
        let runs = record.runs.lock().expect("runs").clone();
        assert_eq!(runs, vec![("pr/1", vec![1]), ("pr/1", vec![2, 3, 4, 5, 6])]);
        assert_eq!(record.overlap.load(Ordering::SeqCst), 0);
        // Idle again: the next enqueue starts a new run.
        assert_eq!(queue.enqueue(item("pr/1", 7)), Enqueued::Started);
        settle(&queue).await;
        assert_eq!(record.runs.lock().expect("runs").len(), 3);
    }

    #[tokio::test]
    async fn a_key_never_runs_twice_at_once_and_concurrency_is_bounded() {
        let (queue, record) = queue(2, Duration::from_millis(100));
        for round in 0..5u32 {
            for key in ["a", "b", "c", "d"] {
                queue.enqueue(item(key, round));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        settle(&queue).await;
        assert_eq!(record.overlap.load(Ordering::SeqCst), 0);
        assert_eq!(record.most.load(Ordering::SeqCst), 2);
        let runs = record.runs.lock().expect("runs").clone();
        for key in ["a", "b", "c", "d"] {
            let values: Vec<u32> = runs
                .iter()
                .filter(|(k, _)| *k == key)
                .flat_map(|(_, v)| v.clone())
                .collect();
            // Every enqueued value was seen once, in order, whatever the coalescing.
            assert_eq!(values, vec![0, 1, 2, 3, 4], "{key}: {runs:?}");
        }
    }

    #[tokio::test]
    async fn different_keys_run_concurrently() {
        let (queue, record) = queue(4, Duration::from_millis(500));
        queue.enqueue(item("pr/1", 1));
        queue.enqueue(item("pr/2", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(record.running.load(Ordering::SeqCst), 2);
        settle(&queue).await;
    }

    #[tokio::test]
    async fn shutdown_drains_running_work_within_the_grace_period() {
        let (queue, record) = queue(1, Duration::from_millis(300));
        queue.enqueue(item("a", 1));
        queue.enqueue(item("b", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        queue.enqueue(item("a", 2));
        let cancelled = queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(cancelled, 0);
        // The running job finished; what waited (another key, a rerun) was dropped.
        assert_eq!(
            record.runs.lock().expect("runs").clone(),
            vec![("a", vec![1])]
        );
        assert_eq!(queue.enqueue(item("a", 3)), Enqueued::Refused);
        assert_eq!(queue.pending(), 0);
    }

    #[tokio::test]
    async fn shutdown_cancels_work_outliving_the_grace_period() {
        let (queue, record) = queue(2, Duration::from_secs(60));
        queue.enqueue(item("a", 1));
        queue.enqueue(item("b", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = tokio::time::Instant::now();
        assert_eq!(queue.shutdown(Duration::from_millis(200)).await, 2);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(record.runs.lock().expect("runs").is_empty());
        assert_eq!(queue.pending(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_frees_its_key() {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let handler: Handler<Item> = Arc::new(move |item: Item| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.fetch_add(1, Ordering::SeqCst);
                assert!(item.values[0] != 1, "boom");
            })
        });
        let queue = WorkQueue::new(1, handler);
        queue.enqueue(item("a", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(queue.pending(), 0);
        assert_eq!(queue.enqueue(item("a", 2)), Enqueued::Started);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
