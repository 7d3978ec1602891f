//! Anti-entropy: with each counted peer, a 16-ary tree of fingerprints over the buckets
//! both should hold, descended only where it differs, then key lists of the differing
//! buckets and fetches of exactly what this peer lacks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use shoal_core::digest::{Bucket, ContentTag, Fingerprint, TreeNode};
use shoal_core::{ItemKey, PeerKey};
use shoal_store::Store;
use tracing::debug;

use super::RoundTimer;
use super::transfer::Transfer;
use crate::index::KeyIndex;
use crate::policy::Layout;
use crate::rpc::CallError;
use crate::serve::{MAX_BUCKETS_PER_KEYS_REQUEST, MAX_NODES_PER_REQUEST};
use crate::worker::{Next, Worker};
use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
    /// The fingerprint of the items of `bucket` this peer holds and `peer` should hold too.
    fn shared_fingerprint(&self, layout: &Layout, peer: &PeerKey, bucket: Bucket, index: &KeyIndex) -> Fingerprint {
        let me = self.local_peer();
        match layout.bucket_holders(bucket) {
            Some(holders) if holders.contains(me) && holders.contains(peer) => index.fingerprint(bucket),
            Some(_) => Fingerprint::default(),
            None => {
                let mut fingerprint = Fingerprint::default();
                for (key, tag) in index.bucket(bucket) {
                    let holders = layout.key_holders(key);
                    if holders.contains(me) && holders.contains(peer) {
                        fingerprint.toggle(&Fingerprint::of(key, tag));
                    }
                }
                fingerprint
            }
        }
    }

    /// This peer's fingerprints of `nodes` for the comparison with `peer`. Only occupied
    /// buckets are visited: an empty bucket's fingerprint is zero.
    pub(crate) fn digests(&self, layout: &Layout, peer: &PeerKey, nodes: &[TreeNode]) -> Vec<Fingerprint> {
        let index = self.inner.index.lock().expect("never poisoned");
        let occupied: Vec<Bucket> = index.occupied().map(|(bucket, _)| bucket).collect();
        nodes
            .iter()
            .map(|node| {
                let range = node.buckets();
                let start = occupied.partition_point(|bucket| bucket.index() < range.start);
                let mut fingerprint = Fingerprint::default();
                for bucket in occupied[start..].iter().take_while(|b| b.index() < range.end) {
                    fingerprint.toggle(&self.shared_fingerprint(layout, peer, *bucket, &index));
                }
                fingerprint
            })
            .collect()
    }

    pub(crate) fn bucket_keys(&self, buckets: &[Bucket]) -> Vec<(ItemKey, ContentTag)> {
        let index = self.inner.index.lock().expect("never poisoned");
        buckets.iter().flat_map(|bucket| index.bucket(*bucket).iter().map(|(key, tag)| (*key, *tag))).collect()
    }

    /// Compares trees with `peer` and moves what differs; returns how many items one side
    /// lacked.
    pub(super) async fn sync_with(&self, layout: &Layout, peer: &PeerKey) -> Result<usize, CallError> {
        self.inner.counters.anti_entropy_exchanges.fetch_add(1, Ordering::Relaxed);
        let mut frontier = vec![TreeNode::ROOT];
        let mut differing_buckets = Vec::new();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for nodes in frontier.chunks(MAX_NODES_PER_REQUEST) {
                let theirs = self.digests_of(peer, nodes).await?;
                let ours = self.digests(layout, peer, nodes);
                for ((node, ours), theirs) in nodes.iter().zip(ours).zip(theirs) {
                    if ours == theirs {
                        continue;
                    }
                    if node.is_leaf() {
                        differing_buckets.push(Bucket(node.index));
                    } else {
                        next.extend(node.children());
                    }
                }
            }
            frontier = next;
        }
        let (mut fetches, mut missing_there) = (Vec::new(), 0);
        for buckets in differing_buckets.chunks(MAX_BUCKETS_PER_KEYS_REQUEST) {
            let (mine, theirs) = self.reconcile(layout, peer, buckets).await?;
            fetches.extend(mine);
            missing_there += theirs;
        }
        let missing = fetches.len() + missing_there;
        self.run_transfers(fetches).await;
        Ok(missing)
    }

    /// Works out which items of `buckets` one of us lacks and should hold: returns the
    /// fetches this peer needs, and how many items `peer` lacks (it fetches those itself).
    async fn reconcile(
        &self,
        layout: &Layout,
        peer: &PeerKey,
        buckets: &[Bucket],
    ) -> Result<(Vec<Transfer>, usize), CallError> {
        let theirs = self.keys_of(peer, buckets).await?;
        let theirs: HashMap<ItemKey, ContentTag> = theirs.into_iter().collect();
        let ours: HashMap<ItemKey, ContentTag> = self.bucket_keys(buckets).into_iter().collect();
        let me = self.local_peer();
        // Missing here, or another version (of a mergeable item): fetch it, and the store
        // keeps the winner or the merge. A chunk or manifest that this peer's references
        // say nothing keeps any more is being collected: it is not fetched back.
        let mut fetches = Vec::new();
        for (key, tag) in &theirs {
            if ours.get(key) != Some(tag)
                && layout.holders(key).contains(me)
                && (key.kind.is_mergeable() || !self.unreferenced(key.id).await)
            {
                fetches.push(Transfer::Fetch { key: *key, from: peer.clone() });
            }
        }
        let missing_there =
            ours.keys().filter(|key| !theirs.contains_key(key) && layout.holders(key).contains(peer)).count();
        Ok((fetches, missing_there))
    }
}

/// Anti-entropy as a worker: a round compares with every counted peer, one peer a step.
pub(crate) struct AntiEntropyWorker<S, N> {
    node: Node<S, N>,
    timer: RoundTimer,
    /// The round under way: its layout, the peers left to compare with, and what the
    /// comparisons so far found missing.
    round: Option<(Layout, VecDeque<PeerKey>, usize)>,
    rounds: u64,
}

impl<S, N> AntiEntropyWorker<S, N> {
    pub fn new(node: Node<S, N>) -> Self {
        Self { node, timer: RoundTimer::new(), round: None, rounds: 0 }
    }
}

impl<S: Store, N: Network> Worker for AntiEntropyWorker<S, N> {
    const NAME: &'static str = "anti-entropy";

    async fn step(&mut self) -> Result<Next, String> {
        let Some((layout, peers, found_missing)) = &mut self.round else {
            if let Some(due) = self.timer.due(&self.node) {
                return Ok(Next::IdleUntil(due));
            }
            let layout = self.node.start_round();
            let me = self.node.local_peer();
            let peers = layout.peers().iter().filter(|peer| *peer != me).cloned().collect();
            self.round = Some((layout, peers, 0));
            self.rounds += 1;
            return Ok(Next::Busy);
        };
        let Some(peer) = peers.pop_front() else {
            self.node.inner.counters.under_replicated.store(*found_missing as u64, Ordering::Relaxed);
            self.round = None;
            return Ok(Next::Busy);
        };
        // One peer failing a comparison (busy, leaving) is no reason to hold back the
        // others: it is compared again next round.
        match self.node.compare_with(layout, &peer).await {
            Ok(missing) => *found_missing += missing,
            Err(error) => debug!(%peer, "anti-entropy failed: {error}"),
        }
        Ok(Next::Busy)
    }

    fn progress(&self) -> String {
        match &self.round {
            Some((layout, peers, _)) => {
                format!("round {}: {} of {} peers left", self.rounds, peers.len(), layout.peers().len() - 1)
            }
            None => format!("{} rounds", self.rounds),
        }
    }
}
