//! Handoff: items this peer holds but is no longer among the R closest for go to their
//! rightful holders, and the local copy is deleted only once every one of them confirmed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;

use shoal_core::digest::ContentTag;
use shoal_core::{ItemKey, ItemKind, PeerKey};
use shoal_store::Store;
use tracing::warn;

use super::RoundTimer;
use super::transfer::Transfer;
use crate::policy::Layout;
use crate::serve::MAX_KEYS_PER_HAVE;
use crate::worker::{Next, Worker};
use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
    /// Which of `keys` this peer holds a verified copy of. Handoff deletes a copy on these
    /// answers, so each copy is read and verified rather than looked up in the index: one
    /// that fails verification or cannot be read is not confirmed. (Quarantine is not
    /// remembered across a restart, which indexes a bad copy again until scrub finds it.)
    pub(crate) async fn have(&self, keys: Vec<ItemKey>) -> Vec<bool> {
        let mut held = Vec::with_capacity(keys.len());
        for key in keys {
            let indexed = self.inner.index.lock().expect("never poisoned").contains(&key);
            held.push(indexed && matches!(self.fetch_local(key).await, Ok(Some(_))));
        }
        held
    }

    /// Moves items this peer should no longer hold to their rightful holders, deleting the
    /// local copy only once every one of them has it; counts the copies they lacked.
    pub(crate) async fn hand_off(&self, layout: &Layout) {
        let missing = self.hand_off_counting(layout).await;
        self.inner.counters.handoff_pending.store(missing as u64, Ordering::Relaxed);
    }

    async fn hand_off_counting(&self, layout: &Layout) -> usize {
        let me = self.local_peer();
        let mut by_holder: BTreeMap<PeerKey, Vec<ItemKey>> = BTreeMap::new();
        // Each leaving item with the holders it needs and the content it had when pushed.
        let mut leaving: BTreeMap<ItemKey, (usize, ContentTag)> = BTreeMap::new();
        {
            let index = self.inner.index.lock().expect("never poisoned");
            for (_, keys) in index.occupied() {
                for (key, tag) in keys {
                    let holders = layout.holders(key);
                    if holders.contains(me) {
                        continue;
                    }
                    leaving.insert(*key, (holders.len(), *tag));
                    for holder in holders {
                        by_holder.entry(holder).or_default().push(*key);
                    }
                }
            }
        }
        if leaving.is_empty() {
            return 0;
        }
        let mut confirmed: BTreeMap<ItemKey, usize> = BTreeMap::new();
        let mut missing = 0;
        for (holder, keys) in by_holder {
            // A holder may have another version of a mergeable item (a name record, a
            // reference set), so "has it" proves nothing for those: they are always
            // pushed, and the holder's store keeps the winner or the merge. They go first:
            // a chunk or manifest counts as handed over only once its references are
            // there too, or the holder could collect it on a stale set.
            let (mergeable, immutable): (Vec<ItemKey>, Vec<ItemKey>) =
                keys.iter().partition(|key| key.kind.is_mergeable());
            let pushes: Vec<Transfer> =
                mergeable.iter().map(|key| Transfer::Push { key: *key, to: holder.clone() }).collect();
            let mut unreferenced_there = HashSet::new();
            for (key, result) in mergeable.iter().zip(self.run_transfers(pushes).await) {
                match result {
                    Ok(()) => *confirmed.entry(*key).or_default() += 1,
                    Err(_) if key.kind == ItemKind::References => {
                        unreferenced_there.insert(key.id);
                    }
                    Err(_) => {}
                }
            }
            let immutable: Vec<ItemKey> =
                immutable.into_iter().filter(|key| !unreferenced_there.contains(&key.id)).collect();
            for keys in immutable.chunks(MAX_KEYS_PER_HAVE) {
                let Ok(held) = self.held_by(&holder, keys).await else { continue };
                let mut pushes = Vec::new();
                for (key, held) in keys.iter().zip(held) {
                    if held {
                        *confirmed.entry(*key).or_default() += 1;
                    } else {
                        missing += 1;
                        pushes.push(Transfer::Push { key: *key, to: holder.clone() });
                    }
                }
                let results = self.run_transfers(pushes.clone()).await;
                for (push, result) in pushes.iter().zip(results) {
                    if let (Transfer::Push { key, .. }, Ok(())) = (push, result) {
                        *confirmed.entry(*key).or_default() += 1;
                    }
                }
            }
        }
        for (key, (needed, tag)) in leaving {
            if confirmed.get(&key).copied().unwrap_or(0) >= needed {
                // A name record or reference set that changed since it was pushed holds
                // something its holders may not have yet: it stays for the next round.
                match self.delete_local(key, tag).await {
                    Ok(true) => {
                        self.inner.counters.handoffs.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(error) => warn!(item = ?key, "handoff: cannot drop local copy: {error}"),
                }
            }
        }
        missing
    }
}

/// Handoff as a worker: a pass over every local item each repair round.
pub(crate) struct HandoffWorker<S, N> {
    node: Node<S, N>,
    timer: RoundTimer,
    passes: u64,
}

impl<S, N> HandoffWorker<S, N> {
    pub fn new(node: Node<S, N>) -> Self {
        Self { node, timer: RoundTimer::new(), passes: 0 }
    }
}

impl<S: Store, N: Network> Worker for HandoffWorker<S, N> {
    const NAME: &'static str = "handoff";

    async fn step(&mut self) -> Result<Next, String> {
        if let Some(due) = self.timer.due(&self.node) {
            return Ok(Next::IdleUntil(due));
        }
        self.node.hand_off(&self.node.layout()).await;
        self.passes += 1;
        Ok(Next::Busy)
    }

    fn progress(&self) -> String {
        let pending = self.node.inner.counters.handoff_pending.load(Ordering::Relaxed);
        format!("{} passes, {pending} copies not yet handed off", self.passes)
    }
}
