//! This peer's own copies: store calls on the blocking pool, under striped key locks, with
//! the index kept in step with the store.

use std::sync::Arc;

use bytes::Bytes;
use shoal_core::digest::ContentTag;
use shoal_core::names::{NameRecord, check_clock_offset};
use shoal_core::references::References;
use shoal_core::{Hash32, ItemKey, ItemKind, codec};
use shoal_store::{Store, StoreError};
use tracing::warn;

use crate::index::Entry;
use crate::{Network, Node, NodeError};

/// Refuses a batch holding a name record whose version is further ahead of this peer's
/// clock than [`MAX_CLOCK_OFFSET_MS`](shoal_core::names::MAX_CLOCK_OFFSET_MS): it would win
/// over every write for as long as its lead lasts. (Bytes that do not decode are the
/// store's to refuse.)
fn refuse_records_from_far_ahead(items: &[(ItemKey, Bytes)], now: u64) -> Result<(), StoreError> {
    for (key, value) in items.iter().filter(|(key, _)| key.kind == ItemKind::Name) {
        if let Ok(record) = codec::decode::<NameRecord>(value) {
            check_clock_offset(record.version, now)
                .map_err(|ahead| StoreError::Invalid { key: *key, source: ahead.into() })?;
        }
    }
    Ok(())
}

impl<S: Store, N: Network> Node<S, N> {
    /// Runs a store call on the blocking pool.
    pub(crate) async fn with_store<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || work(&store)).await.expect("store calls do not panic")
    }

    /// Serializes store-and-index updates of one key, so the index never disagrees with the
    /// store about it (a delete racing a put would otherwise leave one of them stale).
    pub(crate) async fn lock_key(&self, key: &ItemKey) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock_keys([key]).await.pop().expect("one stripe")
    }

    /// The key locks of several keys, taken in stripe order so that two callers never
    /// wait for each other.
    async fn lock_keys<'a>(&self, keys: impl IntoIterator<Item = &'a ItemKey>) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let stripes = &self.inner.key_locks;
        let mut indices: Vec<usize> = keys.into_iter().map(|key| usize::from(key.id[0]) % stripes.len()).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards = Vec::with_capacity(indices.len());
        for index in indices {
            guards.push(stripes[index].lock().await);
        }
        guards
    }

    /// Stores items as one synced write, and indexes what the store kept: for a name
    /// record, the winner of the merge with the copy already there; for a reference set,
    /// the merge. Returns the name record kept when it is not the one sent.
    pub(crate) async fn store_local(&self, items: Vec<(ItemKey, Bytes)>) -> Result<Option<NameRecord>, StoreError> {
        if items.is_empty() {
            return Ok(None);
        }
        refuse_records_from_far_ahead(&items, self.now_ms())?;
        let _keys = self.lock_keys(items.iter().map(|(key, _)| key)).await;
        let (entries, newer) = self
            .with_store(move |store| {
                let kept = store.put(&items)?;
                let entries: Vec<_> = items
                    .iter()
                    .map(|(key, given)| {
                        let held = kept.iter().find(|(kept_key, _)| kept_key == key).map_or(given, |(_, v)| v);
                        Entry::of(*key, held)
                    })
                    .collect();
                let newer = kept.iter().find(|(key, _)| key.kind == ItemKind::Name);
                Ok((entries, newer.map(|(_, value)| codec::decode(value).expect("verified by the store"))))
            })
            .await?;
        for entry in entries {
            self.inner.quarantined.lock().expect("never poisoned").remove(&entry.key);
            self.inner.index.lock().expect("never poisoned").insert(entry);
        }
        Ok(newer)
    }

    /// Merges `sets` into this peer's reference sets of their ids, as one synced write.
    pub(crate) async fn store_references(&self, sets: Vec<(Hash32, References)>) -> Result<(), StoreError> {
        let items = sets.iter().map(|(id, set)| (ItemKey::references(*id), codec::encode(set).into())).collect();
        self.store_local(items).await.map(drop)
    }

    /// Merges the references a put sends for its chunks, and returns the ids whose chunk
    /// this peer does not hold (or holds only a bad copy of): its ack does not count for
    /// those. A chunk that is here now stays, since its set holds a live reference.
    pub(crate) async fn refer_local(&self, sets: Vec<(Hash32, References)>) -> Result<Vec<Hash32>, StoreError> {
        let ids: Vec<Hash32> = sets.iter().map(|(id, _)| *id).collect();
        self.store_references(sets).await?;
        let index = self.inner.index.lock().expect("never poisoned");
        Ok(ids.into_iter().filter(|id| !index.contains(&ItemKey::chunk(shoal_core::ChunkId(*id)))).collect())
    }

    /// Deletes the local copy of `key` if it still holds what `expected` tags: a name
    /// record or reference set that changed since the caller looked (a newer write, a
    /// merge) is newer than what the caller decided about, so it stays. Returns whether
    /// the copy was deleted.
    pub(crate) async fn delete_local(&self, key: ItemKey, expected: ContentTag) -> Result<bool, StoreError> {
        let _key = self.lock_key(&key).await;
        if self.inner.index.lock().expect("never poisoned").tag(&key) != Some(expected) {
            return Ok(false);
        }
        self.with_store(move |store| store.delete(&key)).await?;
        self.inner.index.lock().expect("never poisoned").remove(&key);
        Ok(true)
    }

    /// The item from the local store, `Ok(None)` if absent. A copy that fails verification
    /// is an error (it is there, just unusable: no one may conclude the item is gone) and
    /// is replaced from another holder in the background. Any other failure (an I/O
    /// error, no file descriptor left) says nothing about the copy: it is reported and
    /// the caller asks elsewhere. Neither removes anything.
    pub(crate) async fn fetch_local(&self, key: ItemKey) -> Result<Option<Bytes>, String> {
        match self.with_store(move |store| store.get(&key)).await {
            Ok(value) => Ok(value),
            Err(error @ StoreError::Corrupt { .. }) => {
                warn!(item = ?key, "local copy fails verification: {error}");
                self.start_corrupt_repair(key);
                Err("its copy fails verification".to_owned())
            }
            Err(error) => {
                self.inner.counters.read_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(item = ?key, "cannot read the local copy: {error}");
                Err(format!("cannot read it: {error}"))
            }
        }
    }

    /// Replaces a local copy that failed verification, in the background.
    pub(crate) fn start_corrupt_repair(&self, key: ItemKey) {
        let node = self.clone();
        self.inner.tasks.spawn(async move { node.repair_corrupt(key).await });
    }

    /// Fault injection for tests and drills: damages the local copy of `key` as a failing
    /// disk would. Returns false if this peer does not hold it.
    pub async fn corrupt_local(&self, key: ItemKey) -> Result<bool, NodeError> {
        Ok(self.with_store(move |store| store.corrupt(&key)).await?)
    }

    /// Every item in this peer's store.
    pub async fn local_items(&self) -> Result<Vec<ItemKey>, NodeError> {
        let keys = self
            .with_store(|store| {
                let mut keys = Vec::new();
                for kind in shoal_core::ItemKind::ALL {
                    keys.extend(store.keys(kind)?);
                }
                Ok(keys)
            })
            .await?;
        Ok(keys)
    }
}
