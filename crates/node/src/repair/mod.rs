//! Self-healing: anti-entropy with the peers that share key ranges, handoff of items this
//! peer no longer should hold, and scrub of its own disk, each run by its worker
//! ([`crate::worker`]).
//!
//! Repair rounds run when the counted peers change (a peer joined, returned, or its
//! grace period ran out) and every `anti_entropy_interval` otherwise (`RoundTimer`).
//! The anti-entropy worker's round
//! compares, with every counted peer, a 16-ary tree of fingerprints over the buckets
//! both should hold, descends only into subtrees that differ, and for differing buckets
//! exchanges key lists and fetches exactly the items it lacks. Repair pulls: the peer
//! that lacks an item fetches it once, from the first holder it compares with, where
//! pushes from every other holder would send it R-1 times. In sync, a comparison is one
//! request carrying one fingerprint, whatever the number of items.
//!
//! The handoff worker's round, on the same triggers, hands off every item this peer
//! holds but is no longer among the R closest for: the rightful holders are asked
//! whether they have it, sent it if not, and the local copy is deleted only once all of
//! them confirmed, so a handoff never lowers the count.
//!
//! Scrub re-reads every local item on a slow, rate-limited cycle; an item that fails
//! verification (there, or on any read) is quarantined and fetched again from a holder.
//!
//! Transfers are bounded in concurrency and in bytes per second so foreground puts and
//! gets keep working during repair.

mod anti_entropy;
mod handoff;
mod scrub;
mod transfer;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shoal_core::PeerKey;
use shoal_store::Store;
use tokio::time::Instant;
use tracing::{debug, warn};

pub(crate) use anti_entropy::AntiEntropyWorker;
pub(crate) use handoff::HandoffWorker;
pub(crate) use scrub::ScrubWorker;
pub(crate) use transfer::RateLimit;

use crate::clock::{CLOCK_OFFSET_LIMIT_MS, PeerClock};
use crate::policy::Layout;
use crate::rpc::CallError;
use crate::{Network, Node};

/// Counters and gauges of repair work, as status and metrics show them.
#[derive(Debug, Default)]
pub(crate) struct RepairCounters {
    pub backlog: AtomicU64,
    pub under_replicated: AtomicU64,
    pub handoff_pending: AtomicU64,
    pub items_moved: AtomicU64,
    pub bytes_moved: AtomicU64,
    pub handoffs: AtomicU64,
    pub rounds: AtomicU64,
    pub anti_entropy_exchanges: AtomicU64,
    pub anti_entropy_bytes: AtomicU64,
    pub scrubbed: AtomicU64,
    pub corrupt_found: AtomicU64,
    pub corrupt_repaired: AtomicU64,
    pub read_errors: AtomicU64,
    pub collected_items: AtomicU64,
    pub collected_bytes: AtomicU64,
}

/// A snapshot of [`RepairCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Peers counted as holders (up, or down within the grace period), this one included.
    pub peers_counted: usize,
    /// Item transfers found necessary and not yet done.
    pub backlog: u64,
    /// Items found missing on a rightful holder in the last anti-entropy round.
    pub under_replicated: u64,
    /// Copies held here for other holders that lacked them at the last handoff.
    pub handoff_pending: u64,
    pub items_moved: u64,
    pub bytes_moved: u64,
    pub handoffs: u64,
    pub rounds: u64,
    /// Anti-entropy comparisons with one peer, and the bytes their messages took.
    pub anti_entropy_exchanges: u64,
    pub anti_entropy_bytes: u64,
    pub scrubbed: u64,
    pub corrupt_found: u64,
    pub corrupt_repaired: u64,
    /// Local reads that failed for another reason than corruption (I/O errors, no file
    /// descriptor left): retried, never a reason to drop a copy.
    pub read_errors: u64,
    /// Manifests and chunks deleted because nothing referred to them any more.
    pub collected_items: u64,
    pub collected_bytes: u64,
}

impl RepairCounters {
    pub fn snapshot(&self, peers_counted: usize) -> RepairStatus {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RepairStatus {
            peers_counted,
            backlog: get(&self.backlog),
            under_replicated: get(&self.under_replicated),
            handoff_pending: get(&self.handoff_pending),
            items_moved: get(&self.items_moved),
            bytes_moved: get(&self.bytes_moved),
            handoffs: get(&self.handoffs),
            rounds: get(&self.rounds),
            anti_entropy_exchanges: get(&self.anti_entropy_exchanges),
            anti_entropy_bytes: get(&self.anti_entropy_bytes),
            scrubbed: get(&self.scrubbed),
            corrupt_found: get(&self.corrupt_found),
            corrupt_repaired: get(&self.corrupt_repaired),
            read_errors: get(&self.read_errors),
            collected_items: get(&self.collected_items),
            collected_bytes: get(&self.collected_bytes),
        }
    }
}

impl<S: Store, N: Network> Node<S, N> {
    /// Reports that `peer` is reachable and compatible, and holds copies since
    /// `holding_since_ms` (what it announced).
    pub fn peer_up(&self, peer: PeerKey, holding_since_ms: u64) {
        let now = self.now_ms();
        if peer != *self.local_peer()
            && self.inner.membership.lock().expect("never poisoned").up(peer, holding_since_ms, Instant::now(), now)
        {
            self.peers_changed();
        }
    }

    /// Reports that the last connection to `peer` closed.
    pub fn peer_down(&self, peer: &PeerKey) {
        self.inner.membership.lock().expect("never poisoned").down(peer, Instant::now());
        self.peers_changed();
    }

    pub(crate) fn peers_changed(&self) {
        self.forget_whole_network();
        self.inner.peer_changes.send_modify(|changes| *changes += 1);
    }

    /// One repair round at once, as the anti-entropy and handoff workers do it in steps:
    /// with every counted peer a clock reading and a comparison, then handoff.
    pub async fn repair_round(&self) {
        let layout = self.start_round();
        let mut found_missing = 0;
        for peer in layout.peers().iter().filter(|peer| *peer != self.local_peer()) {
            match self.compare_with(&layout, peer).await {
                Ok(missing) => found_missing += missing,
                Err(error) => debug!(%peer, "anti-entropy failed: {error}"),
            }
        }
        self.inner.counters.under_replicated.store(found_missing as u64, Ordering::Relaxed);
        self.hand_off(&layout).await;
    }

    /// The layout a round works with; forgets what was measured of peers no longer in it.
    fn start_round(&self) -> Layout {
        let layout = self.layout();
        self.inner.counters.rounds.fetch_add(1, Ordering::Relaxed);
        self.inner.peer_clocks.retain(layout.peers());
        self.inner.latencies.retain(layout.peers());
        layout
    }

    /// Reads `peer`'s clock, then compares trees with it and moves what differs; returns
    /// how many items one side lacked. A peer that does not answer a ping would not answer
    /// the comparison either: it is skipped, one timeout per round being enough.
    async fn compare_with(&self, layout: &Layout, peer: &PeerKey) -> Result<usize, CallError> {
        if !self.measure_clock(peer).await {
            return Ok(0);
        }
        self.sync_with(layout, peer).await
    }

    /// Reads `peer`'s clock with a ping, and warns when it is further off than a peer
    /// may be. Returns whether it answered.
    async fn measure_clock(&self, peer: &PeerKey) -> bool {
        let (sent_ms, sent) = (self.now_ms(), Instant::now());
        match self.ping(peer).await {
            Ok(theirs_ms) => {
                let round_trip_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
                let clock = PeerClock::measured(sent_ms, round_trip_ms, theirs_ms);
                if clock.offset_ms.unsigned_abs() > CLOCK_OFFSET_LIMIT_MS {
                    warn!(%peer, offset_ms = clock.offset_ms, "a peer's clock is off ours by more than {CLOCK_OFFSET_LIMIT_MS} ms");
                }
                self.inner.peer_clocks.record(peer.clone(), clock);
                true
            }
            Err(error) => {
                debug!(%peer, "no answer to a ping: {error}");
                false
            }
        }
    }
}

/// When the next repair round of a worker is due: at once when the counted peers changed
/// since its last round or a peer's grace period ran out, else an interval after the last.
#[derive(Debug)]
struct RoundTimer {
    /// The change count the last round started at.
    changes: u64,
    next: Instant,
}

impl RoundTimer {
    /// Due at once.
    fn new() -> Self {
        Self { changes: u64::MAX, next: Instant::now() }
    }

    /// `None` if a round is due now (and starts it), else when one will be.
    fn due<S: Store, N: Network>(&mut self, node: &Node<S, N>) -> Option<Instant> {
        let changes = *node.inner.peer_changes.borrow();
        let expiry = node.inner.membership.lock().expect("never poisoned").next_expiry();
        let due = expiry.map_or(self.next, |expiry| expiry.min(self.next));
        if changes == self.changes && Instant::now() < due {
            return Some(due);
        }
        self.changes = changes;
        self.next = Instant::now() + node.inner.config.anti_entropy_interval;
        None
    }
}
