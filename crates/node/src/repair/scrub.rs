//! Scrub: every local item re-read and re-verified on a slow, rate-limited cycle that goes
//! on after a restart from where it stopped, expired tombstones purged, and copies that
//! fail verification quarantined until a verified copy replaces them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_core::digest::content_tag;
use shoal_core::{ItemKey, ItemKind, PeerKey, codec};
use shoal_store::{Store, StoreError};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::calls::Strategy;
use crate::worker::{Next, Worker};
use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
    /// Re-reads every local item at once, as the scrub worker does in steps.
    #[cfg(test)]
    pub(crate) async fn scrub_pass(&self) {
        let keys: Vec<ItemKey> = {
            let index = self.inner.index.lock().expect("never poisoned");
            index.occupied().flat_map(|(_, keys)| keys.keys().copied()).collect()
        };
        self.scrub_items(&keys, usize::MAX).await;
    }

    /// Re-reads `keys` in order, within the scrub byte rate, until `bytes` have been read;
    /// returns how many it re-read. One that cannot be read is counted and read again by
    /// the next pass: it says nothing about the copy, and a failing disk must not slow the
    /// search for bad copies down.
    async fn scrub_items(&self, keys: &[ItemKey], bytes: usize) -> usize {
        let mut read = 0;
        for (done, &key) in keys.iter().enumerate() {
            if read >= bytes {
                return done;
            }
            match self.with_store(move |store| store.get(&key)).await {
                Ok(Some(value)) => {
                    read += value.len();
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
                Err(error) => {
                    self.inner.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(item = ?key, "scrub cannot read a copy: {error}");
                }
            }
            self.inner.counters.scrubbed.fetch_add(1, Ordering::Relaxed);
        }
        keys.len()
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

    /// Replaces a quarantined copy with a verified one from the first peer that has it:
    /// its holders first, then every other counted peer.
    async fn replace_corrupt(&self, key: ItemKey) {
        let layout = self.layout();
        let mut peers = layout.holders(&key);
        let others: Vec<PeerKey> = layout.peers().iter().filter(|peer| !peers.contains(peer)).cloned().collect();
        peers.extend(others);
        peers.retain(|peer| peer != self.local_peer());
        let node = self.clone();
        let mut replacements = self.calls(peers, Strategy::OneAtATime { hedge_after: None }, move |peer| {
            let node = node.clone();
            async move {
                let value = node.fetch_from(&peer, key).await.map_err(|e| e.to_string())?.ok_or("not held there")?;
                node.store_local(vec![(key, value)]).await.map(drop).map_err(|e| e.to_string())
            }
        });
        while let Some((peer, replaced)) = replacements.next().await {
            if replaced.is_ok() {
                self.inner.counters.corrupt_repaired.fetch_add(1, Ordering::Relaxed);
                return info!(item = ?key, %peer, "repaired a corrupt copy");
            }
        }
        warn!(item = ?key, "no peer could replace a corrupt copy; anti-entropy will retry");
    }
}

/// Where scrub got to, kept in the store so that a restart goes on from there instead of
/// from the first item.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScrubProgress {
    /// The last item scrubbed in the pass under way; `None` between passes.
    after: Option<ItemKey>,
    passes: u64,
    /// When the last pass ended, in ms since the Unix epoch: the next starts a pause later.
    last_pass_ended_ms: Option<u64>,
}

/// The store record [`ScrubProgress`] is kept under.
const SCRUB_PROGRESS: &str = "scrub";
/// The most items scrubbed in one step, after which the progress is recorded; a step
/// also ends once it read a second's worth of the scrub rate, so a stop never waits long.
const SCRUB_STEP_ITEMS: usize = 256;

/// Scrub as a worker: a pass over every local item in steps of at most
/// [`SCRUB_STEP_ITEMS`], then the scrub pause.
pub(crate) struct ScrubWorker<S, N> {
    node: Node<S, N>,
    /// Read from the store at the first step.
    progress: Option<ScrubProgress>,
    scrubbed_in_pass: u64,
}

impl<S, N> ScrubWorker<S, N> {
    pub fn new(node: Node<S, N>) -> Self {
        Self { node, progress: None, scrubbed_in_pass: 0 }
    }
}

impl<S: Store, N: Network> Worker for ScrubWorker<S, N> {
    const NAME: &'static str = "scrub";

    async fn step(&mut self) -> Result<Next, String> {
        let progress = match &mut self.progress {
            Some(progress) => progress,
            None => {
                let stored = self.node.with_store(|store| store.get_meta(SCRUB_PROGRESS)).await;
                let stored = stored.map_err(|error| format!("cannot read where scrub got to: {error}"))?;
                // A record this build cannot read restarts the pass: scrubbing twice is harmless.
                self.progress.insert(stored.and_then(|bytes| codec::decode(&bytes).ok()).unwrap_or_default())
            }
        };
        if progress.after.is_none()
            && let Some(ended_ms) = progress.last_pass_ended_ms
        {
            // At most a pause from now: a pass that ended while the clock ran ahead must
            // not hold the next one back.
            let pause_ms = u64::try_from(self.node.inner.config.scrub_pause.as_millis()).unwrap_or(u64::MAX);
            let wait_ms = ended_ms.saturating_add(pause_ms).saturating_sub(self.node.now_ms()).min(pause_ms);
            if wait_ms > 0 {
                return Ok(Next::IdleUntil(Instant::now() + Duration::from_millis(wait_ms)));
            }
        }
        let keys =
            self.node.inner.index.lock().expect("never poisoned").keys_after(progress.after.as_ref(), SCRUB_STEP_ITEMS);
        let step_bytes = usize::try_from(self.node.inner.config.scrub_bytes_per_sec).unwrap_or(usize::MAX);
        let done = self.node.scrub_items(&keys, step_bytes).await;
        self.scrubbed_in_pass += done as u64;
        progress.after = keys[..done].last().copied().or(progress.after);
        if keys.len() < SCRUB_STEP_ITEMS && done == keys.len() {
            progress.after = None;
            progress.passes += 1;
            progress.last_pass_ended_ms = Some(self.node.now_ms());
            self.scrubbed_in_pass = 0;
        }
        // Not recorded, a restart scrubs some items twice: worth a warning, not a stop.
        let record = codec::encode(&*progress);
        if let Err(error) = self.node.with_store(move |store| store.put_meta(SCRUB_PROGRESS, &record)).await {
            warn!("cannot record where scrub got to: {error}");
        }
        Ok(Next::Busy)
    }

    fn progress(&self) -> String {
        match &self.progress {
            Some(progress) => format!("pass {}: {} items", progress.passes + 1, self.scrubbed_in_pass),
            None => "starting".to_owned(),
        }
    }
}
