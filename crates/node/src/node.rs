//! The node: shared state, its clocks, placement, lifecycle and status (its own copies are
//! in `local.rs`, answers to peers in `serve.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::names::{HybridClock, Version};
use shoal_core::{ItemKey, ItemKind, PeerKey};
use shoal_store::{Store, StoreError};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::warn;

use crate::calls::Latencies;
use crate::clock::{CLOCK_OFFSET_LIMIT_MS, PeerClock, PeerClocks};
use crate::collect::CollectionWorker;
use crate::index::{Entry, KeyIndex};
use crate::membership::Membership;
use crate::policy::{Layout, Replicas};
use crate::repair::{AntiEntropyWorker, HandoffWorker, ScrubWorker};
use crate::repair::{RateLimit, RepairCounters, RepairStatus};
use crate::serve::ANSWERS_IN_FLIGHT;
use crate::tasks::Tasks;
use crate::worker::{WorkerStatus, Workers};
use crate::{Network, NodeConfig, NodeError};

const KEY_LOCK_STRIPES: usize = 64;

/// How long a lookup that found every reachable peer stands in for new lookups.
const WHOLE_NETWORK_TTL: Duration = Duration::from_secs(2);

/// This run's tie-breaker in versions: random at every start. A version names one write
/// (the references a put writes name it), so no run may issue a version an earlier one
/// did, whatever the clock does across a restart: stepped back, restored with the store
/// from a snapshot, or an identity copied to a second machine. The same clock time in
/// two runs still gives two versions; their order is the protocol's to decide, as
/// between two peers.
fn writer_id(peer: &PeerKey) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(peer.as_bytes())
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub network: shoal_core::NetworkStatus,
    pub replication_factor: usize,
    pub items_stored: u64,
    pub bytes_stored: u64,
    /// Free bytes on the store's disk, and whether writes are refused for lack of them.
    pub disk_free_bytes: u64,
    pub disk_full: bool,
    /// How far each counted peer's clock is from this one's, as last measured.
    pub peer_clocks: Vec<(PeerKey, PeerClock)>,
    pub repair: RepairStatus,
    /// The background workers, in the order they were started.
    pub workers: Vec<WorkerStatus>,
}

/// A Shoal peer's replica logic. Cheap to clone.
#[derive(Debug)]
pub struct Node<S, N> {
    pub(crate) inner: Arc<Inner<S, N>>,
}

impl<S, N> Clone for Node<S, N> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

#[derive(Debug)]
pub(crate) struct Inner<S, N> {
    pub config: NodeConfig,
    pub store: Arc<S>,
    pub network: N,
    /// Replica writes outstanding on this node, including those that go on after a put
    /// met its consistency level.
    pub write_slots: Arc<Semaphore>,
    /// The items in `store`, by bucket. Updated after every store write or delete.
    pub index: Mutex<KeyIndex>,
    pub membership: Mutex<Membership>,
    pub counters: RepairCounters,
    /// Counts changes of the counted peers; workers wake on them.
    pub peer_changes: watch::Sender<u64>,
    pub repair_rate: Arc<RateLimit>,
    pub scrub_rate: Arc<RateLimit>,
    /// Corrupt local items being replaced right now.
    pub corrupt_in_repair: Mutex<HashSet<ItemKey>>,
    /// Local copies that failed verification and wait for a verified copy to replace
    /// them (so reads that find one again do not start another repair).
    pub quarantined: Mutex<HashSet<ItemKey>>,
    /// Striped by key: held across a store write or delete and the index update after it.
    pub key_locks: Vec<tokio::sync::Mutex<()>>,
    /// When this peer's store was created: its arrival, as it announces it.
    pub holding_since_ms: u64,
    /// Versions for name writes and uploads coordinated here.
    pub clock: Mutex<HybridClock>,
    /// The other peers' clocks, as measured by repair rounds.
    pub peer_clocks: PeerClocks,
    /// Every task this node runs in the background.
    pub tasks: Tasks,
    /// The background workers among them, as status shows them.
    pub workers: Workers,
    /// Requests from other peers being answered ([`crate::serve`]).
    pub answer_slots: Arc<Semaphore>,
    /// How fast each peer answers ([`crate::rpc`]).
    pub latencies: Arc<Latencies>,
    /// The last lookup that found every reachable peer, and when.
    pub whole_network: Mutex<Option<(Instant, Vec<PeerKey>)>>,
    /// Items handoff is challenging a holder for, with how many challenges are out.
    pub challenged: Mutex<HashMap<ItemKey, usize>>,
}

impl<S: Store, N: Network> Node<S, N> {
    /// A node over `store`; reads every key (and every name record) once to build its index.
    pub fn new(config: NodeConfig, store: S, network: N) -> Result<Self, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let mut entries = Vec::new();
        for kind in ItemKind::ALL {
            for key in store.keys(kind)? {
                if !kind.is_mergeable() {
                    entries.push(Entry::immutable(key));
                    continue;
                }
                match store.get(&key) {
                    Ok(Some(value)) => entries.push(Entry::of(key, &value)),
                    Ok(None) => {}
                    // Left out of the index like any copy that fails verification: its
                    // bytes stay until anti-entropy brings a verified copy to replace them.
                    Err(error @ StoreError::Corrupt { .. }) => warn!(item = ?key, "not indexing a copy: {error}"),
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let inner = Inner {
            write_slots: Arc::new(Semaphore::new(config.chunks_in_flight * config.replication_factor)),
            index: Mutex::new(KeyIndex::new(entries)),
            membership: Mutex::new(Membership::new(config.failure_grace, config.tombstone_lifetime)),
            holding_since_ms: store.created_ms(),
            counters: RepairCounters::default(),
            peer_changes: watch::Sender::new(0),
            repair_rate: Arc::new(RateLimit::new(config.repair_bytes_per_sec)),
            scrub_rate: Arc::new(RateLimit::new(config.scrub_bytes_per_sec)),
            corrupt_in_repair: Mutex::new(HashSet::new()),
            quarantined: Mutex::new(HashSet::new()),
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            clock: Mutex::new(HybridClock::new(writer_id(network.local_peer()))),
            peer_clocks: PeerClocks::default(),
            latencies: Arc::default(),
            whole_network: Mutex::new(None),
            challenged: Mutex::default(),
            tasks: Tasks::default(),
            workers: Workers::default(),
            answer_slots: Arc::new(Semaphore::new(ANSWERS_IN_FLIGHT)),
            config,
            store: Arc::new(store),
            network,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn local_peer(&self) -> &PeerKey {
        self.inner.network.local_peer()
    }

    /// This node's wall clock, in ms since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        crate::clock::wall_ms().saturating_add_signed(self.inner.config.clock_skew_ms)
    }

    /// A version for a write coordinated here, newer than every one this node has seen.
    /// Refused while most peers find this node's clock too far off: its versions would
    /// be refused by the others, or win over writes made after them.
    pub(crate) fn next_version(&self) -> Result<Version, NodeError> {
        if let Some(offset_ms) = self.inner.peer_clocks.off_by() {
            return Err(NodeError::Unavailable {
                what: "a write".to_owned(),
                failures: format!(
                    "this peer's clock is {} ms {} most of its peers' (at most {CLOCK_OFFSET_LIMIT_MS} ms \
                     allowed): it coordinates no writes until its time is fixed",
                    offset_ms.unsigned_abs(),
                    if offset_ms < 0 { "ahead of" } else { "behind" },
                ),
            });
        }
        Ok(self.inner.clock.lock().expect("never poisoned").tick(self.now_ms()))
    }

    /// Where items belong among every counted peer, this one included (see
    /// [`crate::policy`]): a peer down for less than the grace period still counts. Peers
    /// past it are forgotten here, so every answer uses the same peers as the next round.
    pub(crate) fn layout(&self) -> Layout {
        let move_window = u64::try_from(self.inner.config.move_window.as_millis()).unwrap_or(u64::MAX);
        let settled_ms = self.now_ms().saturating_sub(move_window);
        let mut membership = self.inner.membership.lock().expect("never poisoned");
        let expired = membership.expire(Instant::now());
        let (mut counted, departed) = (membership.counted(), membership.departed());
        drop(membership);
        if expired {
            // Whoever noticed first, the workers' rounds must see it.
            self.peers_changed();
        }
        counted.push((self.local_peer().clone(), self.inner.holding_since_ms));
        Layout::new(counted, departed, self.inner.config.replication_factor, settled_ms)
    }

    /// [`Node::replicas`] among the counted peers and every peer a DHT lookup reaches, for
    /// the foreground: so writes go to the R closest reachable peers, and a write at ALL
    /// fails while one of them is down but not yet replaced. A peer the lookup alone found
    /// is taken as arriving now: nothing says it has what it should hold.
    ///
    /// A lookup that ran to its end and returned fewer than kad's k peers has found every
    /// reachable peer (one that timed out found only some), so its answer is reused for every key for a moment (until a peer comes or goes), which
    /// spares small networks one lookup per item.
    pub(crate) async fn placement(&self, key: &ItemKey) -> Result<Replicas, NodeError> {
        let found = match self.whole_network() {
            Some(peers) => peers,
            None => {
                let lookup = self.inner.network.closest_peers(&key.id).await?;
                if lookup.found_everyone() {
                    *self.inner.whole_network.lock().expect("never poisoned") =
                        Some((Instant::now(), lookup.peers.clone()));
                }
                lookup.peers
            }
        };
        Ok(self.layout().with_found(found, self.now_ms()).replicas(key))
    }

    /// The failure to report when `placement` found fewer than R peers.
    pub(crate) fn placement_shortfall(&self, placement: &[PeerKey]) -> Option<(String, String)> {
        (placement.len() < self.inner.config.replication_factor)
            .then(|| ("placement".to_owned(), format!("only {} reachable peers", placement.len())))
    }

    /// Every reachable peer, if a recent lookup found them all and nobody came or went.
    fn whole_network(&self) -> Option<Vec<PeerKey>> {
        let cached = self.inner.whole_network.lock().expect("never poisoned");
        let (found_at, peers) = cached.as_ref()?;
        (found_at.elapsed() < WHOLE_NETWORK_TTL).then(|| peers.clone())
    }

    /// Forgets the cached whole network: a peer came or went.
    pub(crate) fn forget_whole_network(&self) {
        *self.inner.whole_network.lock().expect("never poisoned") = None;
    }

    /// Starts the background workers (anti-entropy, handoff, scrub, collection) that run
    /// until [`Node::stop`].
    pub fn start(&self) {
        let (tasks, workers, inner) = (&self.inner.tasks, &self.inner.workers, &self.inner);
        let changes = || inner.peer_changes.subscribe();
        let repair_rate = Some(inner.repair_rate.clone());
        workers.start(tasks, AntiEntropyWorker::new(self.clone()), changes(), repair_rate.clone());
        workers.start(tasks, HandoffWorker::new(self.clone()), changes(), repair_rate);
        workers.start(tasks, ScrubWorker::new(self.clone()), changes(), Some(inner.scrub_rate.clone()));
        workers.start(tasks, CollectionWorker::new(self.clone()), changes(), None);
    }

    /// Stops everything this node runs in the background, answers to other peers and
    /// replica writes included, and waits until all of it has ended.
    pub async fn stop(&self) {
        self.inner.tasks.stop().await;
    }

    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let network = self.inner.network.status().await?;
        let (stats, space) = (self.inner.store.stats(), self.inner.store.space());
        let peers_counted = self.layout().peers().len();
        Ok(NodeStatus {
            network,
            replication_factor: self.inner.config.replication_factor,
            items_stored: stats.items,
            bytes_stored: stats.bytes,
            disk_free_bytes: space.free_bytes,
            disk_full: space.full,
            peer_clocks: self.inner.peer_clocks.snapshot(),
            repair: self.inner.counters.snapshot(peers_counted),
            workers: self.inner.workers.status(),
        })
    }
}
