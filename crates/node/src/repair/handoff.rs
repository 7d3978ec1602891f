//! Handoff: items this peer holds but is no longer among the R closest for go to their
//! rightful holders, and the local copy is deleted only once every one of them proved it
//! holds it: a digest of the bytes keyed by a fresh nonce for a chunk or manifest, its
//! own value covering ours for a name record or reference set. "I have it" or "stored"
//! deletes nothing, and while the challenge is out this peer gives the item to no one,
//! so the answer cannot come from its own copy. A proof shows the holder could read the
//! bytes when it answered; a holder that drops them after is a failed holder, as one
//! whose disk dies is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use shoal_core::digest::ContentTag;
use shoal_core::wire::possession_proof;
use shoal_core::{Hash32, ItemKey, ItemKind, Kept, PeerKey, resolve, verify_item};
use shoal_store::Store;
use tracing::warn;

use super::RoundTimer;
use super::transfer::Transfer;
use crate::policy::Layout;
use crate::serve::MAX_KEYS_PER_PROOF;
use crate::worker::{Next, Worker};
use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
    /// Proofs of possession of `keys` for `nonce` (see [`Request::Prove`]). Handoff
    /// deletes a copy on these, so each copy is read and verified rather than looked up in
    /// the index: one that fails verification or cannot be read is not proved. (Quarantine
    /// is not remembered across a restart, which indexes a bad copy again until scrub
    /// finds it.) An item this peer is challenging a holder for is not proved either (see
    /// [`Node::challenging`]).
    ///
    /// [`Request::Prove`]: shoal_core::wire::Request::Prove
    pub(crate) async fn prove(&self, nonce: &Hash32, keys: Vec<ItemKey>) -> Vec<Option<Hash32>> {
        let mut proofs = Vec::with_capacity(keys.len());
        for key in keys {
            let value = if key.kind.is_mergeable() { None } else { self.held(key).await };
            proofs.push(value.map(|value| possession_proof(nonce, &value)));
        }
        proofs
    }

    /// The mergeable item `key`, if this peer holds it and is not challenging a holder
    /// for it.
    pub(crate) async fn holding(&self, key: ItemKey) -> Option<Bytes> {
        if !key.kind.is_mergeable() {
            return None;
        }
        self.held(key).await
    }

    async fn held(&self, key: ItemKey) -> Option<Bytes> {
        let indexed = self.inner.index.lock().expect("never poisoned").contains(&key);
        if !indexed || self.challenging(&key) {
            return None;
        }
        self.fetch_local(key).await.ok().flatten()
    }

    /// Whether this peer is challenging a holder for `key` right now. Until the answer is
    /// in, it hands that item to no one and proves it to no one: a hostile holder could
    /// otherwise pass the challenge on this peer's own copy, by fetching the bytes from
    /// it, or by relaying the challenge to it, directly or through a third peer.
    pub(crate) fn challenging(&self, key: &ItemKey) -> bool {
        self.inner.challenged.lock().expect("never poisoned").contains_key(key)
    }

    /// Marks `keys` as being challenged for, until the guard drops.
    fn challenge(&self, keys: &[ItemKey]) -> Challenge<'_> {
        let mut challenged = self.inner.challenged.lock().expect("never poisoned");
        for key in keys {
            *challenged.entry(*key).or_default() += 1;
        }
        Challenge { challenged: &self.inner.challenged, keys: keys.to_vec() }
    }

    /// Moves items this peer should no longer hold to their rightful holders, deleting the
    /// local copy only once every one of them proved it has it; counts the copies they
    /// lacked.
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
            // reference set), so a digest of ours proves nothing for those: they are
            // always pushed, and the holder's value must then cover ours. They go first:
            // a chunk or manifest counts as handed over only once its references are
            // there too, or the holder could collect it on a stale set.
            let (mergeable, immutable): (Vec<ItemKey>, Vec<ItemKey>) =
                keys.iter().partition(|key| key.kind.is_mergeable());
            let mut unreferenced_there = HashSet::new();
            for key in self.hand_over_mergeable(&holder, mergeable).await {
                match key {
                    Ok(key) => *confirmed.entry(key).or_default() += 1,
                    Err(key) if key.kind == ItemKind::References => {
                        unreferenced_there.insert(key.id);
                    }
                    Err(_) => {}
                }
            }
            let immutable: Vec<ItemKey> =
                immutable.into_iter().filter(|key| !unreferenced_there.contains(&key.id)).collect();
            for keys in immutable.chunks(MAX_KEYS_PER_PROOF) {
                let Some(unproved) = self.proved_by(&holder, keys, &mut confirmed).await else {
                    // A holder that does not answer holds, as far as we know, nothing.
                    missing += keys.len();
                    continue;
                };
                missing += unproved.len();
                let pushes: Vec<Transfer> =
                    unproved.iter().map(|key| Transfer::Push { key: *key, to: holder.clone() }).collect();
                self.run_transfers(pushes).await;
                // Acknowledging a push proves nothing either: a fresh challenge does.
                self.proved_by(&holder, &unproved, &mut confirmed).await;
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

    /// Pushes each mergeable item to `holder`, then asks for the holder's value: `Ok` for
    /// the keys whose value there covers ours (merging ours in changes nothing), `Err`
    /// for the others.
    async fn hand_over_mergeable(&self, holder: &PeerKey, keys: Vec<ItemKey>) -> Vec<Result<ItemKey, ItemKey>> {
        let pushes: Vec<Transfer> = keys.iter().map(|key| Transfer::Push { key: *key, to: holder.clone() }).collect();
        let pushed = self.run_transfers(pushes).await;
        let mut handed = Vec::with_capacity(keys.len());
        for (key, pushed) in keys.into_iter().zip(pushed) {
            let covered = pushed.is_ok() && {
                let window = self.challenge(&[key]);
                let theirs = self.held_value(holder, key).await;
                drop(window);
                match (self.fetch_local(key).await, theirs) {
                    // Ours, arriving where theirs is, would change nothing.
                    (Ok(Some(ours)), Ok(Some(theirs))) => {
                        verify_item(&key, &theirs).is_ok() && resolve(&key, &theirs, &ours) == Kept::Old
                    }
                    _ => false,
                }
            };
            handed.push(if covered { Ok(key) } else { Err(key) });
        }
        handed
    }

    /// Challenges `holder` to prove it holds `keys`, with a fresh nonce, and counts each
    /// proved key into `confirmed`. Returns the keys not proved, leaving out those whose
    /// local copy cannot be read (nothing to check a proof against, nor to push); `None`
    /// when the holder did not answer.
    async fn proved_by(
        &self,
        holder: &PeerKey,
        keys: &[ItemKey],
        confirmed: &mut BTreeMap<ItemKey, usize>,
    ) -> Option<Vec<ItemKey>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).ok()?;
        let window = self.challenge(keys);
        let proofs = self.proofs_from(holder, nonce, keys).await.ok()?;
        // Only while the holder computes its answer may our copy not help it.
        drop(window);
        let mut unproved = Vec::new();
        for (key, proof) in keys.iter().zip(proofs) {
            let Ok(Some(ours)) = self.fetch_local(*key).await else { continue };
            if proof == Some(possession_proof(&nonce, &ours)) {
                *confirmed.entry(*key).or_default() += 1;
            } else {
                unproved.push(*key);
            }
        }
        Some(unproved)
    }
}

/// Keys being challenged for, released when dropped.
struct Challenge<'a> {
    challenged: &'a Mutex<HashMap<ItemKey, usize>>,
    keys: Vec<ItemKey>,
}

impl Drop for Challenge<'_> {
    fn drop(&mut self) {
        let mut challenged = self.challenged.lock().expect("never poisoned");
        for key in &self.keys {
            if let Some(count) = challenged.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    challenged.remove(key);
                }
            }
        }
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
