//! Repair transfers: bounded in concurrency and in bytes per second, so foreground puts
//! and gets keep working during repair.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use shoal_core::{ItemKey, PeerKey};
use shoal_store::Store;
use tokio::time::Instant;
use tracing::debug;

use crate::{Network, Node};

/// A token bucket: on average at most `bytes_per_sec`, bursts of one second's worth.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_sec: f64,
    state: Mutex<(Instant, f64)>,
}

impl RateLimit {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        Self { bytes_per_sec: rate, state: Mutex::new((Instant::now(), rate)) }
    }

    /// Whether a caller is waiting for the rate right now.
    pub fn throttling(&self) -> bool {
        let (last, available) = *self.state.lock().expect("never poisoned");
        available < 0.0 && Instant::now() < last + Duration::from_secs_f64(-available / self.bytes_per_sec)
    }

    pub async fn acquire(&self, bytes: usize) {
        let wait = {
            let mut state = self.state.lock().expect("never poisoned");
            let now = Instant::now();
            let (last, available) = *state;
            let refilled =
                (available + now.duration_since(last).as_secs_f64() * self.bytes_per_sec).min(self.bytes_per_sec);
            let left = refilled - bytes as f64;
            *state = (now, left);
            if left >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-left / self.bytes_per_sec) }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// One transfer that repair found necessary.
#[derive(Debug, Clone)]
pub(super) enum Transfer {
    Push { key: ItemKey, to: PeerKey },
    Fetch { key: ItemKey, from: PeerKey },
}

impl<S: Store, N: Network> Node<S, N> {
    /// Runs transfers a bounded number at a time, within the repair byte rate.
    pub(super) async fn run_transfers(&self, transfers: Vec<Transfer>) -> Vec<Result<(), String>> {
        let counters = &self.inner.counters;
        counters.backlog.fetch_add(transfers.len() as u64, Ordering::Relaxed);
        stream::iter(transfers)
            .map(|transfer| async move {
                let result = self.transfer(&transfer).await;
                counters.backlog.fetch_sub(1, Ordering::Relaxed);
                if let Err(reason) = &result {
                    debug!(?transfer, "repair transfer failed: {reason}");
                }
                result
            })
            .buffered(self.inner.config.repair_concurrency)
            .collect()
            .await
    }

    async fn transfer(&self, transfer: &Transfer) -> Result<(), String> {
        let moved = match transfer {
            Transfer::Push { key, to } => {
                let value = self.fetch_local(*key).await?.ok_or("no longer held here")?;
                self.inner.repair_rate.acquire(value.len()).await;
                let len = value.len();
                self.store_on(to, vec![(*key, value)]).await.map_err(|e| e.to_string())?;
                len
            }
            Transfer::Fetch { key, from } => {
                let value = self.fetch_from(from, *key).await.map_err(|e| e.to_string())?.ok_or("not held there")?;
                self.inner.repair_rate.acquire(value.len()).await;
                let len = value.len();
                self.store_local(vec![(*key, value)]).await.map_err(|e| e.to_string())?;
                len
            }
        };
        self.inner.counters.items_moved.fetch_add(1, Ordering::Relaxed);
        self.inner.counters.bytes_moved.fetch_add(moved as u64, Ordering::Relaxed);
        Ok(())
    }
}
