//! The in-memory store: same contract as [`crate::RocksStore`], for tests of the layers above
//! that need a real store but no disk.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use shoal_core::{ItemKey, ItemKind, Kept, resolve, verify_item};

use crate::{Space, Store, StoreError, StoreStats};

/// Items in a `BTreeMap` behind one mutex. Values are verified on put and on get, like on disk.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    created_ms: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::created_at(crate::now_ms())
    }
}

#[derive(Default)]
struct Inner {
    items: BTreeMap<ItemKey, Bytes>,
    meta: BTreeMap<String, Vec<u8>>,
    stats: StoreStats,
    reads_fail: bool,
    disk_full: bool,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that says it was created at `created_ms`: for tests whose clock is not
    /// the system's.
    pub fn created_at(created_ms: u64) -> Self {
        Self { inner: Mutex::default(), created_ms }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory store mutex poisoned: a thread panicked mid-update")
    }

    /// Fault injection for the layers above: while set, every read fails with an engine
    /// error, as on a disk failing with EIO or a process out of file descriptors.
    pub fn fail_reads(&self, fail: bool) {
        self.inner().reads_fail = fail;
    }

    /// Fault injection for the layers above: while set, every put fails as on a full
    /// disk, and deletes go on.
    pub fn fail_writes_as_full(&self, full: bool) {
        self.inner().disk_full = full;
    }

    /// Stores `value` under `key` unverified and uncounted, as a corrupted disk would.
    #[cfg(test)]
    pub(crate) fn write_raw(&self, key: &ItemKey, value: &[u8]) {
        self.inner().items.insert(*key, Bytes::copy_from_slice(value));
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Store for MemoryStore {
    fn put(&self, items: &[(ItemKey, Bytes)]) -> Result<Vec<(ItemKey, Bytes)>, StoreError> {
        for (key, value) in items {
            verify_item(key, value).map_err(|source| StoreError::Invalid { key: *key, source })?;
        }
        let mut inner = self.inner();
        if inner.disk_full {
            return Err(StoreError::Full { op: "write", detail: "injected: no space left".into() });
        }
        let mut kept = Vec::new();
        // Decide every item before changing any, so a refused merge leaves the batch unwritten.
        let mut writes = Vec::new();
        for (key, given) in items {
            // As in RocksStore: a verified copy stays unless the new one supersedes it or
            // merges with it.
            let old = inner.items.get(key).cloned();
            let value = match old.as_ref().filter(|old| verify_item(key, old).is_ok()) {
                Some(old) => match resolve(key, old, given) {
                    Kept::Old => {
                        if old != given {
                            kept.push((*key, old.clone()));
                        }
                        continue;
                    }
                    Kept::New => given.clone(),
                    Kept::Merged(merged) => {
                        // A merge can outgrow what one item may hold: refuse the write
                        // rather than keep a value that no read would accept.
                        verify_item(key, &merged).map_err(|source| StoreError::Invalid { key: *key, source })?;
                        let merged = Bytes::from(merged);
                        kept.push((*key, merged.clone()));
                        merged
                    }
                },
                None => given.clone(),
            };
            writes.push((*key, value));
        }
        for (key, value) in writes {
            let new_bytes = value.len() as u64;
            match inner.items.insert(key, value) {
                None => {
                    inner.stats.items += 1;
                    inner.stats.bytes += new_bytes;
                }
                Some(old) => inner.stats.bytes = inner.stats.bytes - old.len() as u64 + new_bytes,
            }
        }
        Ok(kept)
    }

    fn get(&self, key: &ItemKey) -> Result<Option<Bytes>, StoreError> {
        let inner = self.inner();
        if inner.reads_fail {
            return Err(StoreError::Engine { op: "read", detail: "Too many open files (os error 24)".into() });
        }
        let Some(value) = inner.items.get(key).cloned() else {
            return Ok(None);
        };
        verify_item(key, &value).map_err(|source| StoreError::Corrupt { key: *key, source })?;
        Ok(Some(value))
    }

    fn contains(&self, key: &ItemKey) -> Result<bool, StoreError> {
        Ok(self.inner().items.contains_key(key))
    }

    fn delete(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        let Some(old) = inner.items.remove(key) else {
            return Ok(false);
        };
        inner.stats.items -= 1;
        inner.stats.bytes -= old.len() as u64;
        Ok(true)
    }

    fn keys(&self, kind: ItemKind) -> Result<Vec<ItemKey>, StoreError> {
        let first = ItemKey { kind, id: [0; 32] };
        let inner = self.inner();
        Ok(inner.items.range(first..).map(|(key, _)| *key).take_while(|key| key.kind == kind).collect())
    }

    fn stats(&self) -> StoreStats {
        self.inner().stats
    }

    /// Memory is not a disk that fills, but for [`MemoryStore::fail_writes_as_full`].
    fn space(&self) -> Space {
        Space { free_bytes: u64::MAX, full: self.inner().disk_full }
    }

    fn created_ms(&self) -> u64 {
        self.created_ms
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner().meta.get(name).cloned())
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner().meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn corrupt(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        let Some(value) = inner.items.get_mut(key).filter(|value| !value.is_empty()) else {
            return Ok(false);
        };
        let mut flipped = value.to_vec();
        flipped[0] ^= 0xff;
        *value = flipped.into();
        Ok(true)
    }
}
