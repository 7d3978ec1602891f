//! Shoal's item store: the [`Store`] trait, its RocksDB implementation ([`RocksStore`]) and
//! an in-memory twin ([`MemoryStore`]) for tests of the layers above.
//!
//! A store holds items ([`ItemKey`] → bytes) and trusts nothing it is given or reads back:
//! every value is checked against its key ([`shoal_core::verify_item`]) on the way in, so a
//! peer never stores what another peer pushed wrongly, and on the way out, so a flipped bit
//! on disk is reported as [`StoreError::Corrupt`] instead of being served. A successful
//! [`Store::put`] is a durable ack: what it wrote is synced to disk before it returns.
//!
//! Both implementations pass one conformance suite (`src/conformance.rs`).
//!
//! Architecture invariant: only this crate names RocksDB, and no RocksDB type appears in its
//! public API. It knows nothing of libp2p or of replication policy: which items a peer should
//! hold is decided above, in `shoal-node`.

mod chunk_files;
#[cfg(test)]
mod conformance;
mod memory;
mod rocks;
mod space;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
pub use memory::MemoryStore;
pub use rocks::RocksStore;
use shoal_core::{ItemKey, ItemKind, VerifyError};
pub use space::DEFAULT_MIN_FREE_BYTES;

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A peer's local item storage.
///
/// Implementations are shared between threads; callers in async code run these blocking
/// calls in `spawn_blocking`.
pub trait Store: Send + Sync + 'static {
    /// Verifies every item against its key (nothing is written if any fails), then writes them
    /// as one atomic batch and returns only after the write-ahead log is synced (that is what a
    /// durable ack means). Items already present are not counted twice in stats. Returns the
    /// stored copies that stay in place of a given value: one that wins over it (a newer
    /// version of a name record) or the merge of both (a reference set). Empty when every
    /// value given is what the store now holds.
    fn put(&self, items: &[(ItemKey, Bytes)]) -> Result<Vec<(ItemKey, Bytes)>, StoreError>;

    /// The item if present, verified against its key on every read: bytes that do not match
    /// give `Err(StoreError::Corrupt{..})` and are never returned.
    fn get(&self, key: &ItemKey) -> Result<Option<Bytes>, StoreError>;

    /// Whether the item is present. Does not verify it: that is what [`Store::get`] and
    /// scrubbing are for.
    fn contains(&self, key: &ItemKey) -> Result<bool, StoreError>;

    /// Removes the item, synced like a put; `Ok(true)` if it was there.
    fn delete(&self, key: &ItemKey) -> Result<bool, StoreError>;

    /// All keys of one kind, in key order.
    fn keys(&self, kind: ItemKind) -> Result<Vec<ItemKey>, StoreError>;

    /// Items and bytes held, exact, maintained incrementally (no scan per call).
    fn stats(&self) -> StoreStats;

    /// Room left for writes.
    fn space(&self) -> Space;

    /// When this store was created, in ms since the Unix epoch, as recorded with it: it
    /// holds no copy it was not given since.
    fn created_ms(&self) -> u64;

    /// A small record of the node's own bookkeeping kept under `name` beside the items
    /// (where scrub got to): synced like a put, never replicated, never an item.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Records `value` under `name` (see [`Store::get_meta`]), synced before it returns.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Fault injection for tests and drills: flips a byte of the stored value, bypassing
    /// verification, as a failing disk would. `Ok(false)` if the item is absent or empty.
    fn corrupt(&self, key: &ItemKey) -> Result<bool, StoreError>;
}

/// So one store can be shared by the node's tasks as `Arc<S>` or `Arc<dyn Store>`.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn put(&self, items: &[(ItemKey, Bytes)]) -> Result<Vec<(ItemKey, Bytes)>, StoreError> {
        (**self).put(items)
    }

    fn get(&self, key: &ItemKey) -> Result<Option<Bytes>, StoreError> {
        (**self).get(key)
    }

    fn contains(&self, key: &ItemKey) -> Result<bool, StoreError> {
        (**self).contains(key)
    }

    fn delete(&self, key: &ItemKey) -> Result<bool, StoreError> {
        (**self).delete(key)
    }

    fn keys(&self, kind: ItemKind) -> Result<Vec<ItemKey>, StoreError> {
        (**self).keys(kind)
    }

    fn stats(&self) -> StoreStats {
        (**self).stats()
    }

    fn space(&self) -> Space {
        (**self).space()
    }

    fn created_ms(&self) -> u64 {
        (**self).created_ms()
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get_meta(name)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).put_meta(name, value)
    }

    fn corrupt(&self, key: &ItemKey) -> Result<bool, StoreError> {
        (**self).corrupt(key)
    }
}

/// What a store holds: the number of items and the sum of their value lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub items: u64,
    pub bytes: u64,
}

/// Room left for writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Free bytes on the store's file system, the reserve included.
    pub free_bytes: u64,
    /// Writes are refused for lack of space: the free bytes are under the reserve, or
    /// the last write found the disk full.
    pub full: bool,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A put was given bytes that are not what their key names; nothing was written.
    #[error("item {key} refused: {source}")]
    Invalid { key: ItemKey, source: VerifyError },
    /// The bytes stored under a key are not what it names (disk corruption or tampering).
    #[error("item {key} is corrupt on disk: {source}")]
    Corrupt { key: ItemKey, source: VerifyError },
    /// Another process (or another store in this one) has the database open.
    #[error(
        "store {} is in use by another process (is another peer running on this data dir?): \
         {detail}",
        path.display()
    )]
    Locked { path: PathBuf, detail: String },
    /// The database holds items in a layout this build does not read.
    #[error(
        "store {} is in format {found} and this build reads format {expected}: move it away and start \
         on an empty data dir",
        path.display()
    )]
    Format { path: PathBuf, found: u32, expected: u32 },
    /// The database could not be opened or created.
    #[error("cannot open store {}: {detail}", path.display())]
    Open { path: PathBuf, detail: String },
    /// The disk has no room for a write (or less than the reserve kept free). Nothing
    /// of the write was kept; reads go on, and writes succeed again once space is freed.
    #[error("disk full: cannot {op}: {detail}")]
    Full { op: &'static str, detail: String },
    /// The storage engine failed an operation (I/O error, no file descriptor left, ...).
    #[error("storage engine failed to {op}: {detail}")]
    Engine { op: &'static str, detail: String },
}
