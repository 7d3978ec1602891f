//! Scrub: every local item re-read and re-verified on a slow, rate-limited cycle, expired
//! tombstones purged, and copies that fail verification quarantined until a verified
//! copy replaces them.

use std::sync::atomic::Ordering;

use shoal_core::digest::content_tag;
use shoal_core::{ItemKey, ItemKind, codec};
use shoal_store::{Store, StoreError};
use tracing::{debug, info, warn};

use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
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
        let layout = self.layout();
        let me = self.local_peer();
        for peer in layout.holders(&key).iter().chain(layout.peers()).filter(|p| *p != me) {
            if let Ok(Some(value)) = self.fetch_from(peer, key).await
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
