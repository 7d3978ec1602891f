//! Space reclamation: a chunk or manifest is deleted only once every reference it ever
//! had is dead, by positive evidence, on every one of its holders.
//!
//! References ([`shoal_core::references`]) live in a reference set beside the items they
//! keep, on the same holders, are written before the object that needs them is visible,
//! and are repaired by anti-entropy like every other item. Each collection round, every
//! peer
//! 1. looks for evidence against the live entries of the sets it holds: an upload lease
//!    past its deadline, or, for a binding reference, a record of that name with a newer
//!    version on a quorum of the name's holders (newest wins, so the referring version
//!    can never come back, and a quorum keeps that newer record through the loss of any
//!    one disk). A holder that does not answer, an unreadable record or a name with no
//!    record at all prove nothing: the entry stays live;
//! 2. for each set whose entries have all been dead for `gc_grace`, asks all R holders of
//!    the id for their sets and merges the answers in (a holder that left, down past its
//!    grace period but not forgotten, has not answered). Only if each of them answered with
//!    a set, and none knows a reference this peer had not heard of (that one is learnt
//!    first, and the deletion waits for a later round), does it delete its chunk and
//!    manifest of that id, under the key's lock after reading the set once
//!    more, so a put that refers to the item again meanwhile keeps it;
//! 3. forgets sets that have been all dead for `tombstone_lifetime` and keep nothing here.
//!
//! A shared chunk has one entry per object version that uses it, so deleting one object
//! leaves it to the others. A put that reuses a chunk being collected adds its lease to the
//! chunk's set in the chunk's own batch, so every holder that acknowledges the chunk keeps
//! (or writes again) it. Outages and partitions only delay all of this.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use futures::stream::{self, StreamExt};
use shoal_core::names::Version;
use shoal_core::references::{References, Referrer};
use shoal_core::{Consistency, Hash32, ItemKey, ItemKind, codec};
use shoal_store::Store;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::calls::Strategy;
use crate::worker::{Next, Worker};
use crate::{Network, Node};

/// Name records looked up at once while looking for evidence.
const LOOKUPS_IN_FLIGHT: usize = 16;

impl<S: Store, N: Network> Node<S, N> {
    /// One round: gather evidence against live references, delete what every holder
    /// agrees nothing refers to, forget old dead reference sets. Fails if the deaths it
    /// found could not be recorded (after deleting what was agreed before).
    pub async fn collection_round(&self) -> Result<(), String> {
        let mut sets = self.local_reference_sets().await;
        let grace = self.inner.config.gc_grace.as_millis() as u64;
        let candidates: HashSet<Hash32> =
            sets.iter().filter(|(_, set)| set.dead_for(grace, self.now_ms())).map(|(id, _)| *id).collect();
        let newest = self.newest_versions(&sets).await;
        let now = self.now_ms();
        let mut killed = Vec::new();
        for (id, set) in &mut sets {
            let mut changed = set.expire_uploads(now);
            let superseded: Vec<Referrer> = set
                .live()
                .filter(|referrer| match referrer {
                    Referrer::Binding { name, version } => newest.get(name).is_some_and(|newest| newest > version),
                    Referrer::Upload(_) => false,
                })
                .collect();
            for referrer in &superseded {
                changed |= set.kill(referrer, now);
            }
            if changed {
                killed.push((*id, set.clone()));
            }
        }
        // What is not recorded now is found again next round; the candidates were dead
        // for the grace period before this round and do not depend on it.
        let recorded = match killed.is_empty() {
            true => Ok(()),
            false => self.store_references(killed).await.map_err(|e| format!("cannot record dead references: {e}")),
        };
        for (id, set) in sets.into_iter().filter(|(id, _)| candidates.contains(id)) {
            self.collect(id, set, now).await;
        }
        recorded
    }

    /// The reference sets this peer holds. A set that cannot be read is left out, so
    /// nothing it keeps is collected this round.
    async fn local_reference_sets(&self) -> Vec<(Hash32, References)> {
        let keys: Vec<ItemKey> = {
            let index = self.inner.index.lock().expect("never poisoned");
            let keys = index.occupied().flat_map(|(_, keys)| keys.keys().copied());
            keys.filter(|key| key.kind == ItemKind::References).collect()
        };
        let mut sets = Vec::with_capacity(keys.len());
        for key in keys {
            match self.fetch_local(key).await {
                Ok(Some(value)) => sets.push((key.id, codec::decode(&value).expect("verified by the store"))),
                Ok(None) => {}
                Err(reason) => debug!(item = ?key, "collection skips a reference set: {reason}"),
            }
        }
        sets
    }

    /// For every name that a live binding reference among `sets` names: the newest version
    /// that a quorum of its holders holds a record at least as new as. Names without such
    /// a quorum are absent: that proves nothing.
    async fn newest_versions(&self, sets: &[(Hash32, References)]) -> HashMap<Hash32, Version> {
        let mut names: Vec<Hash32> = sets
            .iter()
            .flat_map(|(_, set)| set.live())
            .filter_map(|referrer| match referrer {
                Referrer::Binding { name, .. } => Some(name),
                Referrer::Upload(_) => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        let layout = self.layout();
        let layout = &layout;
        let quorum = Consistency::Quorum.required(self.inner.config.replication_factor);
        stream::iter(names)
            .map(|name| async move {
                let key = ItemKey { kind: ItemKind::Name, id: name };
                let node = self.clone();
                let answers = self
                    .calls(layout.holders(&key), Strategy::All { finish: false }, move |holder| {
                        let node = node.clone();
                        async move { node.fetch_record(&holder, key).await }
                    })
                    .every_answer()
                    .await;
                let mut versions = Vec::new();
                for (holder, answer) in answers {
                    match answer {
                        Ok(Some(record)) => versions.push(record.version),
                        Ok(None) => {}
                        Err(reason) => debug!(%holder, item = ?key, "no evidence from a name holder: {reason}"),
                    }
                }
                versions.sort_unstable_by(|a, b| b.cmp(a));
                versions.get(quorum - 1).map(|newest| (name, *newest))
            })
            .buffer_unordered(LOOKUPS_IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await
    }

    /// Deletes the chunk and manifest of `id` held here, if all holders of the id (the R
    /// current ones, and those a recent arrival displaced) agree
    /// that every reference to them has been dead for the grace period and none of them
    /// knows a reference that this peer's `local` set (all dead) lacks; forgets the set
    /// once it is old and keeps nothing here.
    async fn collect(&self, id: Hash32, local: References, now: u64) {
        let mut set = local.clone();
        let kept = [ItemKey::chunk(shoal_core::ChunkId(id)), ItemKey::manifest(shoal_core::ObjectId(id))];
        let held: Vec<ItemKey> = {
            let index = self.inner.index.lock().expect("never poisoned");
            kept.into_iter().filter(|key| index.contains(key)).collect()
        };
        let references = ItemKey::references(id);
        if held.is_empty() {
            if set.dead_for(self.inner.config.tombstone_lifetime.as_millis() as u64, now) {
                self.forget_references(references, now).await;
            }
            return;
        }
        let layout = self.layout();
        let replicas = layout.replicas(&references);
        if replicas.current().len() < self.inner.config.replication_factor {
            return debug!(?references, "collection waits for a full holder set");
        }
        // A holder that left may be the one that heard of a reference: its absence is no
        // evidence, so the item waits for it to return or to be forgotten for good.
        if let Some(away) = layout.departed_holder(&references) {
            return debug!(%away, ?references, "collection waits for a holder that left");
        }
        // Holders a recent arrival displaced too: their sets may not have moved yet. One
        // of them without a set has nothing to hand over (it never had one, or handed it
        // to the current holders); a current holder without one has yet to receive it.
        let mut others = replicas.everyone();
        others.retain(|holder| holder != self.local_peer());
        let node = self.clone();
        let answers = self
            .calls(others, Strategy::All { finish: false }, move |holder| {
                let node = node.clone();
                async move { node.fetch_from(&holder, references).await }
            })
            .every_answer()
            .await;
        for (holder, answer) in answers {
            let current = replicas.current().contains(&holder);
            match answer {
                Ok(Some(value)) => match shoal_core::verify_item(&references, &value) {
                    Ok(()) => set.merge(&codec::decode(&value).expect("verified above")),
                    Err(error) => return debug!(%holder, ?references, "collection waits: a bad set: {error}"),
                },
                Ok(None) if !current => {}
                Ok(None) => return debug!(%holder, ?references, "collection waits for a holder's references"),
                Err(error) => return debug!(%holder, ?references, "collection waits for a holder: {error}"),
            }
        }
        // A reference this peer had not heard of is learnt first, and decided on in a later
        // round with everything else it holds.
        let grace = self.inner.config.gc_grace.as_millis() as u64;
        let agreed =
            |set: &References| set.dead_for(grace, now) && set.entries().all(|(referrer, _)| local.contains(referrer));
        if !agreed(&set) {
            // A holder knows a reference this peer had not heard of: learn it.
            if let Err(error) = self.store_references(vec![(id, set)]).await {
                warn!(?references, "cannot record references: {error}");
            }
            return;
        }
        let _key = self.lock_key(&references).await;
        let mut current = match self.with_store(move |store| store.get(&references)).await {
            Ok(Some(value)) => codec::decode::<References>(&value).expect("verified by the store"),
            Ok(None) => return,
            Err(error) => return warn!(?references, "collection cannot re-read a set: {error}"),
        };
        current.merge(&set);
        if !agreed(&current) {
            return;
        }
        for key in held {
            match self.with_store(move |store| Ok((store.get(&key)?.map_or(0, |v| v.len()), store.delete(&key)?))).await
            {
                Ok((len, _)) => {
                    self.inner.index.lock().expect("never poisoned").remove(&key);
                    self.inner.counters.collected_items.fetch_add(1, Ordering::Relaxed);
                    self.inner.counters.collected_bytes.fetch_add(len as u64, Ordering::Relaxed);
                    info!(item = ?key, "collected: every reference to it is dead");
                }
                Err(error) => warn!(item = ?key, "cannot collect: {error}"),
            }
        }
    }

    /// Deletes a reference set that has been all dead for the tombstone lifetime, checked
    /// again under the key's lock.
    async fn forget_references(&self, references: ItemKey, now: u64) {
        let lifetime = self.inner.config.tombstone_lifetime.as_millis() as u64;
        let _key = self.lock_key(&references).await;
        let result = self
            .with_store(move |store| match store.get(&references)? {
                Some(value) if codec::decode::<References>(&value).expect("verified").dead_for(lifetime, now) => {
                    store.delete(&references)
                }
                _ => Ok(false),
            })
            .await;
        match result {
            Ok(true) => {
                self.inner.index.lock().expect("never poisoned").remove(&references);
            }
            Ok(false) => {}
            Err(error) => warn!(?references, "cannot forget a dead reference set: {error}"),
        }
    }

    /// Whether this peer holds a reference set for `id` whose every entry is dead: its
    /// chunk and manifest are being collected, so repair must not fetch them back.
    pub(crate) async fn unreferenced(&self, id: Hash32) -> bool {
        let references = ItemKey::references(id);
        match self.with_store(move |store| store.get(&references)).await {
            Ok(Some(value)) => codec::decode::<References>(&value).is_ok_and(|set| set.dead_for(0, u64::MAX)),
            Ok(None) | Err(_) => false,
        }
    }
}

/// Collection as a worker: a round every `gc_interval`, the first one interval after start.
pub(crate) struct CollectionWorker<S, N> {
    node: Node<S, N>,
    next: Instant,
    rounds: u64,
}

impl<S, N> CollectionWorker<S, N> {
    pub fn new(node: Node<S, N>) -> Self {
        let next = Instant::now() + node.inner.config.gc_interval;
        Self { node, next, rounds: 0 }
    }
}

impl<S: Store, N: Network> Worker for CollectionWorker<S, N> {
    const NAME: &'static str = "collection";

    async fn step(&mut self) -> Result<Next, String> {
        if Instant::now() < self.next {
            return Ok(Next::IdleUntil(self.next));
        }
        self.next = Instant::now() + self.node.inner.config.gc_interval;
        self.rounds += 1;
        self.node.collection_round().await?;
        Ok(Next::IdleUntil(self.next))
    }

    fn progress(&self) -> String {
        let collected = self.node.inner.counters.collected_items.load(Ordering::Relaxed);
        format!("{} rounds, {collected} items collected", self.rounds)
    }
}
