//! The node's background tasks. Every task the node starts runs here, so that a stop ends
//! them all and none outlives the node or grows without bound.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone: every clone starts and stops the same tasks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks {
    running: TaskTracker,
    stopping: CancellationToken,
}

impl Tasks {
    /// Runs `work` until it ends or the node stops. A stop drops it at an await point:
    /// each store write is atomic on its own and repair finishes what a stop cut short,
    /// so nothing is left half done.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        self.running.spawn(async move {
            tokio::select! {
                biased;
                () = stopping.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs `work` as one of these tasks and hands back its output, so whoever awaits it
    /// may go away (a client that hangs up) without cutting it short. `None` if the node
    /// stopped first.
    pub async fn run_to_end<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let (done, output) = tokio::sync::oneshot::channel();
        self.spawn(async move {
            let _ = done.send(work.await);
        });
        output.await.ok()
    }

    /// Runs the future `work` makes of the stop signal: for work that ends itself when the
    /// node stops, at a point of its choosing ([`crate::worker`]).
    pub fn spawn_stoppable<F>(&self, work: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.running.spawn(work(self.stopping.clone()));
    }

    /// Stops every task and waits until all have ended.
    pub async fn stop(&self) {
        self.stopping.cancel();
        self.running.close();
        self.running.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_stop_ends_endless_tasks_and_waits_for_them() {
        let tasks = Tasks::default();
        tasks.spawn(std::future::pending());
        tasks.spawn(std::future::pending());
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), tasks.stop()).await;
        assert!(stopped.is_ok(), "endless tasks outlived the stop");
        // Work spawned after a stop never runs.
        let late = Arc::new(AtomicBool::new(false));
        let ran = late.clone();
        tasks.spawn(async move { ran.store(true, Ordering::SeqCst) });
        tasks.stop().await;
        assert!(!late.load(Ordering::SeqCst));
        assert_eq!(tasks.run_to_end(async { 1 }).await, None, "nothing runs after a stop");
    }

    #[tokio::test]
    async fn work_run_to_its_end_outlives_whoever_awaited_it() {
        let tasks = Tasks::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finished, ended) = tokio::sync::oneshot::channel();
        let work = async move {
            released.await.unwrap();
            finished.send(()).unwrap();
            7
        };
        let mut awaited = Box::pin(tasks.run_to_end(work));
        assert!(futures::poll!(awaited.as_mut()).is_pending());
        drop(awaited);
        release.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), ended).await.unwrap().unwrap();
        assert_eq!(tasks.run_to_end(async { 7 }).await, Some(7));
    }
}
