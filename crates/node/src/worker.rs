//! Background workers: anti-entropy, handoff, scrub and collection, each a named loop of
//! bounded steps with a state that status shows, errors counted and backed off from, and a
//! stop that lets the step under way end (Garage's `background/worker.rs` is the model).
//!
//! A worker decides what one step does and when the next is due; the runner here owns
//! everything else, so a new worker is one [`Worker`] impl and one line in
//! [`Node::start`](crate::Node::start).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::repair::RateLimit;
use crate::tasks::Tasks;

/// How long a stop waits for a step under way before it drops it. Dropping is safe (each
/// store write is atomic and the next start redoes what a step left), only wasteful.
const STEP_DRAIN: Duration = Duration::from_secs(5);
/// The first wait after an error; it doubles with each error in a row, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// What a worker does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// More work is ready: step again at once.
    Busy,
    /// Nothing to do until then, or until the counted peers change.
    IdleUntil(Instant),
}

/// One kind of background work, done in bounded steps.
pub(crate) trait Worker: Send + 'static {
    const NAME: &'static str;

    /// Does one bounded piece of work. An error is counted, logged and backed off from;
    /// the next step goes on from where this one stopped.
    fn step(&mut self) -> impl Future<Output = Result<Next, String>> + Send;

    /// What it has got through, for status: "412 of 1000 items", "round 7".
    fn progress(&self) -> String;
}

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Busy,
    /// Busy, and waiting for its byte rate.
    Throttled,
    Idle,
    /// Waiting after errors in a row.
    BackingOff,
}

/// A worker as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub name: String,
    pub state: WorkerState,
    pub steps: u64,
    pub errors: u64,
    pub consecutive_errors: u32,
    pub last_error: Option<String>,
    pub progress: String,
}

/// One running worker's status, and the byte rate it may wait for.
#[derive(Debug)]
struct Slot {
    status: Mutex<WorkerStatus>,
    rate: Option<Arc<RateLimit>>,
}

impl Slot {
    fn update(&self, change: impl FnOnce(&mut WorkerStatus)) {
        change(&mut self.status.lock().expect("never poisoned"));
    }

    fn snapshot(&self) -> WorkerStatus {
        let mut status = self.status.lock().expect("never poisoned").clone();
        if status.state == WorkerState::Busy && self.rate.as_ref().is_some_and(|rate| rate.throttling()) {
            status.state = WorkerState::Throttled;
        }
        status
    }
}

/// The node's running workers.
#[derive(Debug, Default)]
pub(crate) struct Workers(Mutex<Vec<Arc<Slot>>>);

impl Workers {
    /// Runs `worker` in `tasks` until they stop; `changes` wakes it when the counted peers
    /// change, and `rate` is the byte rate its steps wait for, if any.
    pub fn start<W: Worker>(
        &self,
        tasks: &Tasks,
        worker: W,
        changes: watch::Receiver<u64>,
        rate: Option<Arc<RateLimit>>,
    ) {
        let status = WorkerStatus {
            name: W::NAME.to_owned(),
            state: WorkerState::Idle,
            steps: 0,
            errors: 0,
            consecutive_errors: 0,
            last_error: None,
            progress: worker.progress(),
        };
        let slot = Arc::new(Slot { status: Mutex::new(status), rate });
        self.0.lock().expect("never poisoned").push(slot.clone());
        tasks.spawn_stoppable(move |stopping| run(worker, slot, changes, stopping));
    }

    pub fn status(&self) -> Vec<WorkerStatus> {
        self.0.lock().expect("never poisoned").iter().map(|slot| slot.snapshot()).collect()
    }
}

fn backoff(consecutive_errors: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1 << consecutive_errors.saturating_sub(1).min(16)).min(BACKOFF_CAP)
}

async fn run<W: Worker>(
    mut worker: W,
    slot: Arc<Slot>,
    mut changes: watch::Receiver<u64>,
    stopping: CancellationToken,
) {
    loop {
        slot.update(|status| status.state = WorkerState::Busy);
        let result = {
            let mut step = std::pin::pin!(worker.step());
            tokio::select! {
                biased;
                result = &mut step => result,
                () = stopping.cancelled() => match tokio::time::timeout(STEP_DRAIN, step).await {
                    Ok(_) => return,
                    Err(_) => return warn!(worker = W::NAME, "stopped in the middle of a step"),
                },
            }
        };
        let progress = worker.progress();
        let wait_until = match result {
            Ok(next) => {
                slot.update(|status| {
                    status.steps += 1;
                    status.consecutive_errors = 0;
                    status.progress = progress;
                });
                match next {
                    Next::Busy => continue,
                    Next::IdleUntil(at) => {
                        slot.update(|status| status.state = WorkerState::Idle);
                        at
                    }
                }
            }
            Err(error) => {
                warn!(worker = W::NAME, "{error}");
                let mut consecutive = 0;
                slot.update(|status| {
                    status.steps += 1;
                    status.errors += 1;
                    status.consecutive_errors += 1;
                    consecutive = status.consecutive_errors;
                    status.last_error = Some(error);
                    status.progress = progress;
                    status.state = WorkerState::BackingOff;
                });
                Instant::now() + backoff(consecutive)
            }
        };
        tokio::select! {
            biased;
            () = stopping.cancelled() => return,
            () = tokio::time::sleep_until(wait_until) => {}
            // A closed sender (the node is going away) disables this branch.
            Ok(()) = changes.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails twice, then is idle for good; counts its steps.
    struct Flaky {
        steps: u32,
    }

    impl Worker for Flaky {
        const NAME: &'static str = "flaky";

        async fn step(&mut self) -> Result<Next, String> {
            self.steps += 1;
            match self.steps {
                1 | 2 => Err(format!("failure {}", self.steps)),
                _ => Ok(Next::IdleUntil(Instant::now() + Duration::from_secs(3600))),
            }
        }

        fn progress(&self) -> String {
            format!("{} steps", self.steps)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_counted_and_backed_off_from_and_a_success_resets_them() {
        let (tasks, workers) = (Tasks::default(), Workers::default());
        let (_changes, watched) = watch::channel(0);
        let started = Instant::now();
        workers.start(&tasks, Flaky { steps: 0 }, watched, None);
        let status = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let status = workers.status().remove(0);
            if status.state == WorkerState::Idle && status.steps == 3 {
                break status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "never settled: {status:?}");
        };
        assert_eq!((status.errors, status.consecutive_errors), (2, 0));
        assert_eq!(status.last_error.as_deref(), Some("failure 2"));
        assert_eq!(status.progress, "3 steps");
        // One second after the first error, two after the second.
        assert!(started.elapsed() >= BACKOFF_FIRST * 3, "backed off only {:?}", started.elapsed());
        tasks.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_of_peers_wakes_an_idle_worker() {
        let (tasks, workers) = (Tasks::default(), Workers::default());
        let (changes, watched) = watch::channel(0);
        workers.start(&tasks, Flaky { steps: 2 }, watched, None);
        let steps = || workers.status()[0].steps;
        while steps() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        changes.send_replace(1);
        let deadline = Instant::now() + Duration::from_secs(60);
        while steps() < 2 {
            assert!(Instant::now() < deadline, "the change did not wake the worker");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tasks.stop().await;
    }
}
