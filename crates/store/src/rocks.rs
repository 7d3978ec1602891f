//! The RocksDB store: one database per peer, one column family per [`ItemKind`] (named by
//! [`ItemKind::name`]), keyed by the item's 32-byte id, so each family iterates in key order.
//!
//! Chunks (values up to 1 MiB) go to BlobDB blob files: the LSM tree then holds only small
//! blob references, and compaction moves those instead of rewriting every chunk's bytes at
//! each level. Chunks are slices of user files, usually already compressed (media,
//! archives), so blob files are not compressed.
//!
//! Blob garbage collection is off in ordinary compactions. With it on, every compaction
//! rewrote the live chunks of the oldest quarter of blob files, so a put of 1 GiB spent
//! more CPU relocating chunks than receiving them. Deleted chunks instead give their space
//! back in one pass ([`Store::reclaim_space`]) once they are a quarter of the blob bytes
//! on disk: each reclaimed byte then costs at most three rewritten ones.
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
    BlockBasedOptions, BottommostLevelCompaction, ColumnFamily, ColumnFamilyDescriptor, CompactOptions, DB,
    DBCompressionType, ErrorKind, Options, ReadOptions, WriteBatch, WriteOptions,
};
use shoal_core::{ItemKey, ItemKind, supersedes, verify_item};

use crate::{Store, StoreError, StoreStats};

/// Lock stripes: enough that concurrent puts of different chunks rarely share one.
const STRIPES: usize = 64;

/// Chunk values from this size up live in blob files; smaller ones (an object's short tail)
/// stay inline, where a blob reference would cost about as much as the value.
const CHUNK_BLOB_SIZE_MIN_BYTES: u64 = 4 << 10;

/// Deleted chunk bytes below this are not worth a reclaiming pass, whatever the ratio.
const RECLAIM_MIN_BYTES: u64 = 32 << 20;

/// The layout of the items a store holds, recorded under [`FORMAT_KEY`] in the default
/// column family. 2: names keyed by BLAKE3 key derivation, pins by their object's id. A
/// store without the record that holds items was written in layout 1.
const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"shoal store format";

/// RocksDB's name of the option that turns blob garbage collection on in compactions.
const BLOB_GC_OPTION: &str = "enable_blob_garbage_collection";

/// Items in RocksDB, verified on put and on get, with exact stats kept in memory.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    stripes: [Mutex<()>; STRIPES],
    // Each counter is exact once writers are done; stats() reads the two separately.
    items: AtomicU64,
    bytes: AtomicU64,
    /// Bytes of the live chunk values that belong in blob files (those not flushed yet
    /// are still in a memtable): blob file bytes beyond these are deleted chunks.
    live_blob_bytes: AtomicU64,
    /// Held by the one reclaiming pass that may run at a time.
    reclaiming: Mutex<()>,
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
        check_format(&db, &path)?;
        let scan = scan(&db)?;
        tracing::info!(
            path = %path.display(),
            items = scan.stats.items,
            bytes = scan.stats.bytes,
            scan_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let store = Self {
            db,
            path,
            stripes: std::array::from_fn(|_| Mutex::new(())),
            items: AtomicU64::new(scan.stats.items),
            bytes: AtomicU64::new(scan.stats.bytes),
            live_blob_bytes: AtomicU64::new(scan.blob_value_bytes),
            reclaiming: Mutex::new(()),
        };
        Ok(store)
    }

    /// Bytes of all blob files on disk, live chunks and garbage.
    fn blob_file_bytes(&self) -> Result<u64, StoreError> {
        let family = self.family(ItemKind::Chunk);
        let bytes = self.db.property_int_value_cf(family, "rocksdb.total-blob-file-size");
        Ok(bytes.map_err(engine("read blob file size"))?.unwrap_or(0))
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
    fn put(&self, items: &[(ItemKey, Bytes)]) -> Result<Vec<(ItemKey, Bytes)>, StoreError> {
        for (key, value) in items {
            verify_item(key, value).map_err(|source| StoreError::Invalid { key: *key, source })?;
        }
        // A key twice in one batch is one item: verified bytes are what their key names.
        let mut unique: Vec<&(ItemKey, Bytes)> = items.iter().collect();
        unique.sort_by_key(|(key, _)| *key);
        unique.dedup_by_key(|(key, _)| *key);

        let _stripes = self.lock_stripes(unique.iter().map(|(key, _)| key));
        let mut batch = WriteBatch::default();
        let mut kept = Vec::new();
        let (mut items_added, mut bytes_delta, mut blob_bytes_delta) = (0, 0i64, 0i64);
        for (key, value) in unique {
            let family = self.family(key.kind);
            let old_len = match self.db.get_pinned_cf(family, key.id).map_err(engine("read"))? {
                // A verified copy is already durable (the put that wrote it synced before
                // releasing this stripe); it stays unless the new one supersedes it (a newer
                // version of a name record). Rewriting a chunk would only make blob garbage.
                Some(old) if verify_item(key, &old).is_ok() && !supersedes(key, &old, value) => {
                    if *old != **value {
                        kept.push((*key, Bytes::copy_from_slice(&old)));
                    }
                    continue;
                }
                // A name record it supersedes, or corrupt bytes that the verified value replaces.
                Some(old) => old.len(),
                None => {
                    items_added += 1;
                    0
                }
            };
            bytes_delta += value.len() as i64 - old_len as i64;
            blob_bytes_delta += blob_bytes(key.kind, value.len()) as i64 - blob_bytes(key.kind, old_len) as i64;
            batch.put_cf(family, key.id, value);
        }
        if batch.is_empty() {
            return Ok(kept);
        }
        self.db.write_opt(batch, &synced()).map_err(engine("write"))?;
        self.items.fetch_add(items_added, Ordering::Relaxed);
        add_signed(&self.bytes, bytes_delta);
        add_signed(&self.live_blob_bytes, blob_bytes_delta);
        Ok(kept)
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
        self.live_blob_bytes.fetch_sub(blob_bytes(key.kind, old_bytes as usize), Ordering::Relaxed);
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

    /// A pass is a full compaction with blob garbage collection on: it rewrites every live
    /// chunk into new blob files, and the old files, then all garbage, are deleted.
    fn reclaim_space(&self) -> Result<(), StoreError> {
        let Ok(_only_pass) = self.reclaiming.try_lock() else { return Ok(()) };
        let before = self.blob_file_bytes()?;
        // Deleted chunks, estimated: record headers (a few bytes a chunk) count as garbage,
        // and chunks not flushed yet hide as much of it.
        let garbage = before.saturating_sub(self.live_blob_bytes.load(Ordering::Relaxed));
        if garbage < RECLAIM_MIN_BYTES || garbage < before / 4 {
            return Ok(());
        }
        let started = Instant::now();
        let family = self.family(ItemKind::Chunk);
        self.db.set_options_cf(family, &[(BLOB_GC_OPTION, "true")]).map_err(engine("reclaim space"))?;
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        // Reports no error: a pass that failed leaves its garbage, which the next one sees.
        self.db.compact_range_cf_opt(family, None::<&[u8]>, None::<&[u8]>, &options);
        let gc_off = self.db.set_options_cf(family, &[(BLOB_GC_OPTION, "false")]);
        gc_off.map_err(engine("reclaim space"))?;
        let after = self.blob_file_bytes()?;
        tracing::info!(
            path = %self.path.display(),
            before,
            after,
            ms = started.elapsed().as_millis() as u64,
            "reclaimed the space of deleted chunks"
        );
        Ok(())
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
const CHUNK_MEMTABLE_BYTES: usize = 8 << 20;

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
            // Off but in reclaiming passes (see the module comment), which then relocate
            // the live chunks of every blob file.
            options.set_enable_blob_gc(false);
            options.set_blob_gc_age_cutoff(1.0);
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

/// What a scan of every item at open counts.
struct Scan {
    stats: StoreStats,
    /// Bytes of the values that live in blob files.
    blob_value_bytes: u64,
}

fn scan(db: &DB) -> Result<Scan, StoreError> {
    let mut scan = Scan { stats: StoreStats::default(), blob_value_bytes: 0 };
    for kind in ItemKind::ALL {
        let mut iter = db.raw_iterator_cf_opt(family(db, kind), scan_options());
        iter.seek_to_first();
        while let Some(value) = iter.value() {
            scan.stats.items += 1;
            scan.stats.bytes += value.len() as u64;
            scan.blob_value_bytes += blob_bytes(kind, value.len());
            iter.next();
        }
        iter.status().map_err(engine("count items"))?;
    }
    Ok(scan)
}

fn holds_items(db: &DB) -> bool {
    ItemKind::ALL.into_iter().any(|kind| {
        let mut iter = db.raw_iterator_cf(family(db, kind));
        iter.seek_to_first();
        iter.valid()
    })
}

/// The bytes of a value that go to a blob file: a chunk's, from the blob size up.
fn blob_bytes(kind: ItemKind, len: usize) -> u64 {
    let len = len as u64;
    if kind == ItemKind::Chunk && len >= CHUNK_BLOB_SIZE_MIN_BYTES { len } else { 0 }
}

fn add_signed(counter: &AtomicU64, delta: i64) {
    if delta >= 0 {
        counter.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
    } else {
        counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// Refuses a store written in another layout, and records this one's in a new store.
fn check_format(db: &DB, path: &Path) -> Result<(), StoreError> {
    let found = match db.get(FORMAT_KEY).map_err(engine("read the store format"))? {
        Some(bytes) => bytes.as_slice().try_into().map_or(0, u32::from_le_bytes),
        None if !holds_items(db) => {
            return db.put_opt(FORMAT_KEY, FORMAT.to_le_bytes(), &synced()).map_err(engine("record the store format"));
        }
        None => 1,
    };
    if found != FORMAT {
        return Err(StoreError::Format { path: path.to_path_buf(), found, expected: FORMAT });
    }
    Ok(())
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
    fn a_store_in_another_format_is_refused_untouched() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let value = Bytes::from_static(b"an item");
        let key = ItemKey::chunk(shoal_core::ChunkId::from(blake3::hash(&value)));
        store.put(&[(key, value)]).unwrap();
        // What a layout-1 store looks like: items, no format record.
        store.db.delete(FORMAT_KEY).unwrap();
        drop(store);
        let err = RocksStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Format { found: 1, expected: FORMAT, .. }), "{err:?}");
        assert!(err.to_string().contains("format 1"), "{err}");

        let db = DB::open_cf(&Options::default(), dir.path(), ItemKind::ALL.map(ItemKind::name)).unwrap();
        assert_eq!(db.get(FORMAT_KEY).unwrap(), None, "the refused store was changed");
        assert!(db.get_cf(family(&db, ItemKind::Chunk), key.id).unwrap().is_some());
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

    /// `count` distinct 1 MiB chunks.
    fn chunks(count: u32) -> Vec<(ItemKey, Bytes)> {
        (0..count)
            .map(|n| {
                let value = Bytes::from(n.to_le_bytes().repeat(1 << 18));
                (ItemKey::chunk(blake3::hash(&value).into()), value)
            })
            .collect()
    }

    fn put_flushed(store: &RocksStore, items: &[(ItemKey, Bytes)]) {
        for item in items {
            store.put(std::slice::from_ref(item)).unwrap();
        }
        store.db.flush_cf(store.family(ItemKind::Chunk)).unwrap();
    }

    #[test]
    fn deleted_chunks_give_their_disk_space_back() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let items = chunks(48);
        put_flushed(&store, &items);
        assert!(store.blob_file_bytes().unwrap() >= 48 * MIB);

        // 32 MiB deleted (two thirds) is worth a pass, which leaves the 16 live chunks.
        for (key, _) in &items[..31] {
            assert!(store.delete(key).unwrap());
        }
        store.reclaim_space().unwrap();
        assert!(store.blob_file_bytes().unwrap() >= 48 * MIB, "31 MiB deleted is under a pass's minimum");
        assert!(store.delete(&items[31].0).unwrap());
        store.reclaim_space().unwrap();
        let after = store.blob_file_bytes().unwrap();
        assert!((16 * MIB..17 * MIB).contains(&after), "{after} bytes of blob files");
        for (key, value) in &items[32..] {
            assert_eq!(store.get(key).unwrap().as_ref(), Some(value));
        }
        assert_eq!(store.stats(), StoreStats { items: 16, bytes: 16 * MIB });
    }

    #[test]
    fn garbage_left_before_a_restart_is_still_reclaimed() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::TempDir::new().unwrap();
        let items = chunks(64);
        {
            let store = RocksStore::open(dir.path()).unwrap();
            put_flushed(&store, &items);
            // 24 MiB of garbage: below a pass's minimum.
            for (key, _) in &items[..24] {
                store.delete(key).unwrap();
            }
            assert!(store.blob_file_bytes().unwrap() >= 64 * MIB);
        }
        let store = RocksStore::open(dir.path()).unwrap();
        // The 24 MiB from before the restart count towards the next pass.
        for (key, _) in &items[24..32] {
            store.delete(key).unwrap();
        }
        store.reclaim_space().unwrap();
        let after = store.blob_file_bytes().unwrap();
        assert!((32 * MIB..33 * MIB).contains(&after), "{after} bytes of blob files");
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(&dir.path().join("a/b")).unwrap();
        assert_eq!(store.stats(), StoreStats::default());
    }
}
