//! Self-healing: anti-entropy with the peers that share key ranges, handoff of items this
//! peer no longer should hold, and scrub of its own disk.
//!
//! A *repair round* runs when the counted peers change (a peer joined, returned, or its
//! grace period ran out) and every `anti_entropy_interval` otherwise. In a round this peer
//! 1. compares, with every counted peer, a 16-ary tree of fingerprints over the buckets
//!    both should hold, descends only into subtrees that differ, and for differing buckets
//!    exchanges key lists and fetches exactly the items it lacks. Repair pulls: the peer
//!    that lacks an item fetches it once, from the first holder it compares with, where
//!    pushes from every other holder would send it R-1 times. In sync, a comparison is one
//!    request carrying one fingerprint, whatever the number of items;
//! 2. hands off every item it holds but is no longer among the R closest for: the
//!    rightful holders are asked whether they have it, sent it if not, and the local copy
//!    is deleted only once all of them confirmed, so a handoff never lowers the count.
//!
//! Scrub re-reads every local item on a slow, rate-limited cycle; an item that fails
//! verification (there, or on any read) is dropped and fetched again from a holder.
//!
//! Transfers are bounded in concurrency and in bytes per second so foreground puts and
//! gets keep working during repair.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_core::digest::{Bucket, ContentTag, Fingerprint, TreeNode, bucket_holders, content_tag};
use shoal_core::placement::closest;
use shoal_core::wire::{Request, Response};
use shoal_core::{ItemKey, ItemKind, PeerKey, codec};
use shoal_store::{Store, StoreError};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::{CLOCK_OFFSET_LIMIT_MS, PeerClock};
use crate::index::KeyIndex;
use crate::serve::{MAX_BUCKETS_PER_KEYS_REQUEST, MAX_KEYS_PER_HAVE, MAX_NODES_PER_REQUEST};
use crate::{Network, Node};

/// Counters and gauges of repair work, as status and metrics show them.
#[derive(Debug, Default)]
pub(crate) struct RepairCounters {
    pub backlog: AtomicU64,
    pub under_replicated: AtomicU64,
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
    /// Items found missing on a rightful holder in the last round.
    pub under_replicated: u64,
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
enum Transfer {
    Push { key: ItemKey, to: PeerKey },
    Fetch { key: ItemKey, from: PeerKey },
}

impl<S: Store, N: Network> Node<S, N> {
    /// Reports that `peer` is reachable and compatible, and holds copies since
    /// `holding_since_ms` (what it announced).
    pub fn peer_up(&self, peer: PeerKey, holding_since_ms: u64) {
        let now = self.now_ms();
        if peer != *self.local_peer()
            && self.inner.membership.lock().expect("never poisoned").up(peer, holding_since_ms, Instant::now(), now)
        {
            self.forget_whole_network();
            self.inner.repair_wakeup.notify_one();
        }
    }

    /// Reports that the last connection to `peer` closed.
    pub fn peer_down(&self, peer: &PeerKey) {
        self.forget_whole_network();
        self.inner.membership.lock().expect("never poisoned").down(peer, Instant::now());
        self.inner.repair_wakeup.notify_one();
    }

    /// The R peers of `view` that should hold `key`.
    pub(crate) fn holders(&self, view: &[PeerKey], key: &ItemKey) -> Vec<PeerKey> {
        let r = self.inner.config.replication_factor;
        bucket_holders(Bucket::of(key), view, r).unwrap_or_else(|| closest(&key.id, view, r))
    }

    /// The fingerprint of the items of `bucket` this peer holds and `peer` should hold too.
    fn shared_fingerprint(&self, view: &[PeerKey], peer: &PeerKey, bucket: Bucket, index: &KeyIndex) -> Fingerprint {
        let me = self.local_peer();
        let r = self.inner.config.replication_factor;
        match bucket_holders(bucket, view, r) {
            Some(holders) if holders.contains(me) && holders.contains(peer) => index.fingerprint(bucket),
            Some(_) => Fingerprint::default(),
            None => {
                let mut fingerprint = Fingerprint::default();
                for (key, tag) in index.bucket(bucket) {
                    let holders = closest(&key.id, view, r);
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
    pub(crate) fn digests(&self, view: &[PeerKey], peer: &PeerKey, nodes: &[TreeNode]) -> Vec<Fingerprint> {
        let index = self.inner.index.lock().expect("never poisoned");
        let occupied: Vec<Bucket> = index.occupied().map(|(bucket, _)| bucket).collect();
        nodes
            .iter()
            .map(|node| {
                let range = node.buckets();
                let start = occupied.partition_point(|bucket| bucket.index() < range.start);
                let mut fingerprint = Fingerprint::default();
                for bucket in occupied[start..].iter().take_while(|b| b.index() < range.end) {
                    fingerprint.toggle(&self.shared_fingerprint(view, peer, *bucket, &index));
                }
                fingerprint
            })
            .collect()
    }

    pub(crate) fn bucket_keys(&self, buckets: &[Bucket]) -> Vec<(ItemKey, ContentTag)> {
        let index = self.inner.index.lock().expect("never poisoned");
        buckets.iter().flat_map(|bucket| index.bucket(*bucket).iter().map(|(key, tag)| (*key, *tag))).collect()
    }

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

    /// Runs repair rounds for as long as the future is polled.
    pub(crate) async fn run_repair(self) {
        let interval = self.inner.config.anti_entropy_interval;
        let mut next_round = Instant::now();
        loop {
            let expiry = self.inner.membership.lock().expect("never poisoned").next_expiry();
            let wake_at = expiry.map_or(next_round, |expiry| expiry.min(next_round));
            tokio::select! {
                _ = self.inner.repair_wakeup.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
            self.repair_round().await;
            next_round = Instant::now() + interval;
        }
    }

    /// One round: with every counted peer, a clock reading and anti-entropy; then handoff.
    pub async fn repair_round(&self) {
        let view = self.view();
        self.inner.counters.rounds.fetch_add(1, Ordering::Relaxed);
        self.inner.peer_clocks.retain(&view);
        let mut found_missing = 0;
        for peer in view.iter().filter(|peer| *peer != self.local_peer()) {
            self.measure_clock(peer).await;
            match self.sync_with(&view, peer).await {
                Ok(missing) => found_missing += missing,
                Err(reason) => debug!(%peer, "anti-entropy failed: {reason}"),
            }
        }
        found_missing += self.hand_off(&view).await;
        self.inner.counters.under_replicated.store(found_missing as u64, Ordering::Relaxed);
    }

    /// Reads `peer`'s clock with a ping, and warns when it is further off than a peer
    /// may be.
    async fn measure_clock(&self, peer: &PeerKey) {
        let (sent_ms, sent) = (self.now_ms(), Instant::now());
        let answer = self.call(peer, Request::Ping, |answer| match answer {
            Response::Pong { wall_ms } => Ok(wall_ms),
            other => Err(other),
        });
        match answer.await {
            Ok(theirs_ms) => {
                let round_trip_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
                let clock = PeerClock::measured(sent_ms, round_trip_ms, theirs_ms);
                if clock.offset_ms.unsigned_abs() > CLOCK_OFFSET_LIMIT_MS {
                    warn!(%peer, offset_ms = clock.offset_ms, "a peer's clock is off ours by more than {CLOCK_OFFSET_LIMIT_MS} ms");
                }
                self.inner.peer_clocks.record(peer.clone(), clock);
            }
            Err(reason) => debug!(%peer, "no clock reading: {reason}"),
        }
    }

    async fn ask(&self, peer: &PeerKey, request: Request) -> Result<Response, String> {
        let sent = codec::encode(&request).len();
        let response = self.inner.network.request(peer, request).await.map_err(|e| e.to_string())?;
        let bytes = sent + codec::encode(&response).len();
        self.inner.counters.anti_entropy_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        match response {
            Response::Failed(reason) => Err(reason),
            response => Ok(response),
        }
    }

    /// Compares trees with `peer` and moves what differs; returns how many items one side
    /// lacked.
    async fn sync_with(&self, view: &[PeerKey], peer: &PeerKey) -> Result<usize, String> {
        self.inner.counters.anti_entropy_exchanges.fetch_add(1, Ordering::Relaxed);
        let mut frontier = vec![TreeNode::ROOT];
        let mut differing_buckets = Vec::new();
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for nodes in frontier.chunks(MAX_NODES_PER_REQUEST) {
                let Response::Digests(theirs) = self.ask(peer, Request::Digests { nodes: nodes.to_vec() }).await?
                else {
                    return Err("unexpected answer to Digests".into());
                };
                if theirs.len() != nodes.len() {
                    return Err(format!("{} digests for {} nodes", theirs.len(), nodes.len()));
                }
                let ours = self.digests(view, peer, nodes);
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
            let (mine, theirs) = self.reconcile(view, peer, buckets).await?;
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
        view: &[PeerKey],
        peer: &PeerKey,
        buckets: &[Bucket],
    ) -> Result<(Vec<Transfer>, usize), String> {
        let Response::Keys(theirs) = self.ask(peer, Request::BucketKeys { buckets: buckets.to_vec() }).await? else {
            return Err("unexpected answer to BucketKeys".into());
        };
        let theirs: HashMap<ItemKey, ContentTag> = theirs.into_iter().collect();
        let ours: HashMap<ItemKey, ContentTag> = self.bucket_keys(buckets).into_iter().collect();
        let me = self.local_peer();
        // Missing here, or another version (of a mergeable item): fetch it, and the store
        // keeps the winner or the merge. A chunk or manifest that this peer's references
        // say nothing keeps any more is being collected: it is not fetched back.
        let mut fetches = Vec::new();
        for (key, tag) in &theirs {
            if ours.get(key) != Some(tag)
                && self.holders(view, key).contains(me)
                && (key.kind.is_mergeable() || !self.unreferenced(key.id).await)
            {
                fetches.push(Transfer::Fetch { key: *key, from: peer.clone() });
            }
        }
        let missing_there =
            ours.keys().filter(|key| !theirs.contains_key(key) && self.holders(view, key).contains(peer)).count();
        Ok((fetches, missing_there))
    }

    /// Runs transfers a bounded number at a time, within the repair byte rate.
    async fn run_transfers(&self, transfers: Vec<Transfer>) -> Vec<Result<(), String>> {
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
                self.store_on(to, vec![(*key, value)]).await?;
                len
            }
            Transfer::Fetch { key, from } => {
                let value = self.fetch_from(from, *key).await?;
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

    async fn fetch_from(&self, peer: &PeerKey, key: ItemKey) -> Result<Bytes, String> {
        self.fetch_remote(peer, key).await?.ok_or_else(|| "not held there".to_owned())
    }

    /// Moves items this peer should no longer hold to their rightful holders, deleting the
    /// local copy only once every one of them has it. Returns how many copies were missing.
    pub(crate) async fn hand_off(&self, view: &[PeerKey]) -> usize {
        let me = self.local_peer();
        let mut by_holder: BTreeMap<PeerKey, Vec<ItemKey>> = BTreeMap::new();
        // Each leaving item with the holders it needs and the content it had when pushed.
        let mut leaving: BTreeMap<ItemKey, (usize, ContentTag)> = BTreeMap::new();
        {
            let index = self.inner.index.lock().expect("never poisoned");
            for (_, keys) in index.occupied() {
                for (key, tag) in keys {
                    let holders = self.holders(view, key);
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
                let held = match self.ask(&holder, Request::Have { keys: keys.to_vec() }).await {
                    Ok(Response::Have(held)) if held.len() == keys.len() => held,
                    Ok(_) | Err(_) => continue,
                };
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

    /// Re-reads every local item on a slow cycle, within the scrub byte rate.
    pub(crate) async fn run_scrub(self) {
        loop {
            self.scrub_pass().await;
            tokio::time::sleep(self.inner.config.scrub_pause).await;
        }
    }

    /// Re-reads every local item once: a copy that fails verification is replaced, an
    /// expired tombstone purged.
    pub(crate) async fn scrub_pass(&self) {
        let keys: Vec<ItemKey> = {
            let index = self.inner.index.lock().expect("never poisoned");
            index.occupied().flat_map(|(_, keys)| keys.keys().copied()).collect()
        };
        for key in keys {
            match self.with_store(move |store| store.get(&key)).await {
                Ok(Some(value)) => {
                    self.inner.scrub_rate.acquire(value.len()).await;
                    self.purge_if_expired_tombstone(key, &value).await;
                }
                // Gone from the store behind the index's back: forget it, so nobody is
                // told this peer holds it.
                Ok(None) => {
                    self.inner.index.lock().expect("never poisoned").remove(&key);
                }
                Err(error @ StoreError::Corrupt { .. }) => {
                    warn!(item = ?key, "scrub found a bad copy: {error}");
                    self.repair_corrupt(key).await;
                }
                // Says nothing about the copy: the next pass reads it again.
                Err(error) => {
                    self.inner.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(item = ?key, "scrub cannot read a copy: {error}");
                }
            }
            self.inner.counters.scrubbed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops a tombstone older than the tombstone lifetime: by then every peer that could
    /// still hold the binding it deleted has seen it or been wiped.
    async fn purge_if_expired_tombstone(&self, key: ItemKey, value: &[u8]) {
        if key.kind != ItemKind::Name {
            return;
        }
        let record: shoal_core::names::NameRecord = codec::decode(value).expect("verified by the store");
        let age_ms = self.now_ms().saturating_sub(record.version.wall_ms);
        if record.is_tombstone() && u128::from(age_ms) > self.inner.config.tombstone_lifetime.as_millis() {
            match self.delete_local(key, content_tag(&key, value)).await {
                Ok(true) => debug!(name = %record.name, "purged an expired tombstone"),
                Ok(false) => {}
                Err(error) => warn!(name = %record.name, "cannot purge a tombstone: {error}"),
            }
        }
    }

    /// Quarantines a local copy that failed verification and replaces it from a holder.
    /// Scrub and reads may both find the same bad copy: only the first repairs it. A copy
    /// already in quarantine is left to anti-entropy, which pulls the item once a holder
    /// has a verified copy (this peer no longer claims it); trying again on every read
    /// would have peers whose copies are all bad ask each other forever.
    pub(crate) async fn repair_corrupt(&self, key: ItemKey) {
        if self.inner.quarantined.lock().expect("never poisoned").contains(&key)
            || !self.inner.corrupt_in_repair.lock().expect("never poisoned").insert(key)
        {
            return;
        }
        if self.quarantine(key).await {
            self.inner.counters.corrupt_found.fetch_add(1, Ordering::Relaxed);
            self.replace_corrupt(key).await;
        }
        self.inner.corrupt_in_repair.lock().expect("never poisoned").remove(&key);
    }

    /// Stops counting a copy that failed verification as held, so anti-entropy and
    /// handoff treat it as missing, but leaves its bytes on disk: only a verified copy
    /// written over them removes them (the store replaces bytes that fail verification).
    /// A verification that failed for a reason of the read's own is then undone by the
    /// next start, which indexes the copy again and scrubs it.
    ///
    /// Returns false if the copy verifies now (a verified copy replaced it meanwhile).
    async fn quarantine(&self, key: ItemKey) -> bool {
        let _key = self.lock_key(&key).await;
        let corrupt = matches!(self.with_store(move |store| store.get(&key)).await, Err(StoreError::Corrupt { .. }));
        if corrupt {
            self.inner.index.lock().expect("never poisoned").remove(&key);
            self.inner.quarantined.lock().expect("never poisoned").insert(key);
        }
        corrupt
    }

    async fn replace_corrupt(&self, key: ItemKey) {
        let view = self.view();
        let me = self.local_peer();
        for peer in self.holders(&view, &key).iter().chain(&view).filter(|p| *p != me) {
            if let Ok(value) = self.fetch_from(peer, key).await
                && self.store_local(vec![(key, value)]).await.is_ok()
            {
                self.inner.counters.corrupt_repaired.fetch_add(1, Ordering::Relaxed);
                info!(item = ?key, %peer, "repaired a corrupt copy");
                return;
            }
        }
        warn!(item = ?key, "no peer could replace a corrupt copy; anti-entropy will retry");
    }
}
