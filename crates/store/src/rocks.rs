//! The RocksDB store: one database per peer, one column family per [`ItemKind`] (named by
//! [`ItemKind::name`]), keyed by the item's 32-byte id, so each family iterates in key order.
//!
//! Chunks (values up to 1 MiB) go to BlobDB blob files: the LSM tree then holds only small
//! blob references, and compaction moves those instead of rewriting every chunk's bytes at
//! each level. Chunks are slices of user files, usually already compressed (media,
//! archives), so blob files are not compressed.
//!
//! Stats stay exact under concurrent writers without one global write lock: each key maps to
//! one of [`STRIPES`] mutexes, and check-if-present + synced write + counter update run under
//! the stripes of the batch's keys, taken in ascending order (so two batches never wait on
//! each other in a cycle). Batches over disjoint stripes write concurrently, and RocksDB
//! groups their synced writes into one WAL sync.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, ErrorKind, Options, ReadOptions,
    WriteBatch, WriteOptions,
};
use shoal_core::{ItemKey, ItemKind, supersedes, verify_item};

use crate::{Store, StoreError, StoreStats};

/// Lock stripes: enough that concurrent puts of different chunks rarely share one.
const STRIPES: usize = 64;

/// Chunk values from this size up live in blob files; smaller ones (an object's short tail)
/// stay inline, where a blob reference would cost about as much as the value.
const CHUNK_BLOB_SIZE_MIN_BYTES: u64 = 4 << 10;

/// Items in RocksDB, verified on put and on get, with exact stats kept in memory.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    stripes: [Mutex<()>; STRIPES],
    // Each counter is exact once writers are done; stats() reads the two separately.
    items: AtomicU64,
    bytes: AtomicU64,
}

impl RocksStore {
    /// Opens the store in `dir`, creating the directory, the database and its column families
    /// if missing. Fails with [`StoreError::Locked`] if another store has `dir` open.
    ///
    /// Stats are counted here by scanning every item once. The cost is a read of everything
    /// stored (RocksDB iterators load blob values too, ~1 s per GiB on a slow disk), paid
    /// once per open instead of per call.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Open { path: path.clone(), detail: err.to_string() })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = ItemKind::ALL.map(|kind| ColumnFamilyDescriptor::new(kind.name(), family_options(kind)));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(|err| open_error(&path, err))?;

        let started = Instant::now();
        let stats = scan_stats(&db)?;
        tracing::info!(
            path = %path.display(),
            items = stats.items,
            bytes = stats.bytes,
            scan_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(Self {
            db,
            path,
            stripes: std::array::from_fn(|_| Mutex::new(())),
            items: AtomicU64::new(stats.items),
            bytes: AtomicU64::new(stats.bytes),
        })
    }

    fn family(&self, kind: ItemKind) -> &ColumnFamily {
        family(&self.db, kind)
    }

    /// Locks the stripes of `keys`, each once, in ascending order.
    fn lock_stripes<'a>(&self, keys: impl Iterator<Item = &'a ItemKey>) -> Vec<MutexGuard<'_, ()>> {
        let mut indexes: Vec<usize> = keys.map(|key| usize::from(key.id[0]) % STRIPES).collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            // The mutexes guard no data, so a panic elsewhere leaves nothing to distrust.
            .map(|index| self.stripes[index].lock().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }

    /// Stores `value` under `key` unverified and uncounted, as a corrupted disk would.
    pub(crate) fn write_raw(&self, key: &ItemKey, value: &[u8]) -> Result<(), StoreError> {
        self.db.put_cf_opt(self.family(key.kind), key.id, value, &synced()).map_err(engine("write"))
    }
}

impl fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.path).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Store for RocksStore {
    fn put(&self, items: &[(ItemKey, Bytes)]) -> Result<(), StoreError> {
        for (key, value) in items {
            verify_item(key, value).map_err(|source| StoreError::Invalid { key: *key, source })?;
        }
        // A key twice in one batch is one item: verified bytes are what their key names.
        let mut unique: Vec<&(ItemKey, Bytes)> = items.iter().collect();
        unique.sort_by_key(|(key, _)| *key);
        unique.dedup_by_key(|(key, _)| *key);

        let _stripes = self.lock_stripes(unique.iter().map(|(key, _)| key));
        let mut batch = WriteBatch::default();
        let mut items_added = 0;
        let mut bytes_delta = 0i64;
        for (key, value) in unique {
            let family = self.family(key.kind);
            match self.db.get_pinned_cf(family, key.id).map_err(engine("read"))? {
                // A verified copy is already durable (the put that wrote it synced before
                // releasing this stripe); it stays unless the new one supersedes it (a newer
                // version of a name record). Rewriting a chunk would only make blob garbage.
                Some(old) if verify_item(key, &old).is_ok() && !supersedes(key, &old, value) => continue,
                Some(old) if verify_item(key, &old).is_ok() => bytes_delta += value.len() as i64 - old.len() as i64,
                // Corrupt bytes on disk: the verified value replaces them.
                Some(old) => bytes_delta += value.len() as i64 - old.len() as i64,
                None => {
                    items_added += 1;
                    bytes_delta += value.len() as i64;
                }
            }
            batch.put_cf(family, key.id, value);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write_opt(batch, &synced()).map_err(engine("write"))?;
        self.items.fetch_add(items_added, Ordering::Relaxed);
        if bytes_delta >= 0 {
            self.bytes.fetch_add(bytes_delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(bytes_delta.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(())
    }

    fn get(&self, key: &ItemKey) -> Result<Option<Bytes>, StoreError> {
        let value = self.db.get_cf(self.family(key.kind), key.id);
        let Some(value) = value.map_err(engine("read"))? else {
            return Ok(None);
        };
        verify_item(key, &value).map_err(|source| StoreError::Corrupt { key: *key, source })?;
        Ok(Some(Bytes::from(value)))
    }

    fn contains(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let value = self.db.get_pinned_cf(self.family(key.kind), key.id);
        Ok(value.map_err(engine("read"))?.is_some())
    }

    fn delete(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let _stripe = self.lock_stripes(std::iter::once(key));
        let family = self.family(key.kind);
        let old = self.db.get_pinned_cf(family, key.id).map_err(engine("read"))?;
        let Some(old_bytes) = old.map(|old| old.len() as u64) else {
            return Ok(false);
        };
        self.db.delete_cf_opt(family, key.id, &synced()).map_err(engine("delete"))?;
        self.items.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(old_bytes, Ordering::Relaxed);
        Ok(true)
    }

    /// Reads the values too (RocksDB's C API cannot skip loading blobs), so listing chunks
    /// costs a read of every stored chunk.
    fn keys(&self, kind: ItemKind) -> Result<Vec<ItemKey>, StoreError> {
        let mut iter = self.db.raw_iterator_cf_opt(self.family(kind), scan_options());
        iter.seek_to_first();
        let mut keys = Vec::new();
        while let Some(raw) = iter.key() {
            let id = raw.try_into().map_err(|_| StoreError::Engine {
                op: "list keys",
                detail: format!("malformed {}-byte key in column family {}", raw.len(), kind.name()),
            })?;
            keys.push(ItemKey { kind, id });
            iter.next();
        }
        iter.status().map_err(engine("list keys"))?;
        Ok(keys)
    }

    fn stats(&self) -> StoreStats {
        StoreStats { items: self.items.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }

    fn corrupt(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let _stripe = self.lock_stripes(std::iter::once(key));
        let Some(mut value) = self.db.get_cf(self.family(key.kind), key.id).map_err(engine("read"))? else {
            return Ok(false);
        };
        let Some(first) = value.first_mut() else { return Ok(false) };
        *first ^= 0xff;
        self.write_raw(key, &value)?;
        Ok(true)
    }
}

/// Size of one chunk memtable.
const CHUNK_MEMTABLE_BYTES: usize = 16 << 20;

fn family_options(kind: ItemKind) -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    let mut table = BlockBasedOptions::default();
    // Most puts are of new items: a bloom filter answers "absent" without a disk read.
    table.set_bloom_filter(10.0, false);
    options.set_block_based_table_factory(&table);
    match kind {
        ItemKind::Chunk => {
            options.set_enable_blob_files(true);
            options.set_min_blob_size(CHUNK_BLOB_SIZE_MIN_BYTES);
            options.set_blob_compression_type(DBCompressionType::None);
            // Reclaims the space of deleted chunks when compaction reaches their blob files.
            options.set_enable_blob_gc(true);
            // Chunk bytes sit in the memtable until a flush moves them to a blob file; the
            // default 64 MiB (twice) would dominate a daemon's memory. The WAL, not the
            // memtable, makes them durable, so small memtables cost only more flushes.
            options.set_write_buffer_size(CHUNK_MEMTABLE_BYTES);
            options.set_max_write_buffer_number(2);
        }
        // Manifests (64 bytes a chunk) and name records are small and read whole: inline
        // values suit them.
        ItemKind::Manifest | ItemKind::Name => {}
    }
    options
}

fn family(db: &DB, kind: ItemKind) -> &ColumnFamily {
    db.cf_handle(kind.name()).expect("the database is opened with a column family for every kind")
}

/// Durable-ack writes: RocksDB returns only after the write-ahead log is synced.
fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

/// Full scans must not evict the hot items from the block cache.
fn scan_options() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.fill_cache(false);
    options
}

fn scan_stats(db: &DB) -> Result<StoreStats, StoreError> {
    let mut stats = StoreStats::default();
    for kind in ItemKind::ALL {
        let mut iter = db.raw_iterator_cf_opt(family(db, kind), scan_options());
        iter.seek_to_first();
        while let Some(value) = iter.value() {
            stats.items += 1;
            stats.bytes += value.len() as u64;
            iter.next();
        }
        iter.status().map_err(engine("count items"))?;
    }
    Ok(stats)
}

fn engine(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |err| StoreError::Engine { op, detail: err.into_string() }
}

fn open_error(path: &Path, err: rocksdb::Error) -> StoreError {
    let path = path.to_path_buf();
    // RocksDB reports a held LOCK file as an I/O error naming the lock ("While lock file:
    // .../LOCK", or "lock hold by current process" within one process).
    let locked = err.kind() == ErrorKind::IOError && err.as_ref().to_lowercase().contains("lock");
    let detail = err.into_string();
    if locked { StoreError::Locked { path, detail } } else { StoreError::Open { path, detail } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let first = RocksStore::open(dir.path()).unwrap();
        let err = RocksStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(first);
        RocksStore::open(dir.path()).unwrap();
    }

    #[test]
    fn chunks_go_to_blob_files() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let value = Bytes::from(vec![7; 64 << 10]);
        let key = ItemKey::chunk(blake3::hash(&value).into());
        store.put(&[(key, value.clone())]).unwrap();
        store.db.flush_cf(store.family(ItemKind::Chunk)).unwrap();
        let blob_files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|entry| entry.as_ref().unwrap().path().extension() == Some("blob".as_ref()))
            .count();
        assert_eq!(blob_files, 1);
        assert_eq!(store.get(&key).unwrap(), Some(value));
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(&dir.path().join("a/b")).unwrap();
        assert_eq!(store.stats(), StoreStats::default());
    }
}
