//! The RocksDB store: one database per peer, one column family per [`ItemKind`] (named by
//! [`ItemKind::name`]), keyed by the item's 32-byte id, so each family iterates in key order.
//!
//! Chunks from [`CHUNK_FILE_MIN_BYTES`] up (every chunk of a large object but its tail)
//! are files beside the database ([`ChunkFiles`]): written once, where RocksDB (with
//! BlobDB, tried first) wrote each chunk to the write-ahead log and again at flush, held
//! it in a memtable in between and needed garbage collection passes for the space of
//! deleted ones; a 1 GiB put took about 1.4 times the CPU. Smaller chunks stay in
//! RocksDB, where a small object's chunk, manifest and pin land in one synced batch. A
//! batch writes its chunk files first, so a crash may leave a chunk without its manifest,
//! never the reverse.
//!
//! Stats stay exact under concurrent writers without one global write lock: each key maps to
//! one of [`STRIPES`] mutexes, and check-if-present + synced write + counter update run under
//! the stripes of the batch's keys, taken in ascending order (so two batches never wait on
//! each other in a cycle). Batches over disjoint stripes write concurrently, and RocksDB
//! groups their synced writes into one WAL sync.
//!
//! Chunks are slices of user files, usually already compressed (media, archives), so
//! neither chunk files nor the chunk column family are compressed.

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
use shoal_core::{ItemKey, ItemKind, Kept, resolve, verify_item};

use crate::chunk_files::ChunkFiles;
use crate::space::{self, DEFAULT_MIN_FREE_BYTES, Reserve};
use crate::{Space, Store, StoreError, StoreStats};

/// Lock stripes: enough that concurrent puts of different chunks rarely share one.
const STRIPES: usize = 64;

/// Chunks from this size up are files. Below it, a file's two syncs (data, directory)
/// would cost more than a share of RocksDB's grouped WAL sync.
const CHUNK_FILE_MIN_BYTES: usize = 64 << 10;

/// The layout of the items a store holds, recorded under [`FORMAT_KEY`] in the default
/// column family. 2: names keyed by BLAKE3 key derivation, pins by their object's id,
/// large chunks in files. A store without the record that holds items was written in
/// layout 1.
const FORMAT: u32 = 2;
const FORMAT_KEY: &[u8] = b"shoal store format";
/// When the store was created, in the default column family. A store from before it was
/// recorded is taken as created when first opened since: that only makes its peer look
/// newer than it is, which costs reads a few more holders to ask.
const CREATED_KEY: &[u8] = b"shoal store created ms";
/// What [`Store::put_meta`] records goes under this prefix and its name, in the default
/// column family beside the format and creation time.
const META_PREFIX: &[u8] = b"shoal meta/";

/// Items in RocksDB and chunk files, verified on put and on get, with exact stats kept in
/// memory.
pub struct RocksStore {
    db: DB,
    files: ChunkFiles,
    path: PathBuf,
    stripes: [Mutex<()>; STRIPES],
    // Each counter is exact once writers are done; stats() reads the two separately.
    items: AtomicU64,
    bytes: AtomicU64,
    created_ms: u64,
    reserve: Reserve,
}

impl RocksStore {
    /// [`RocksStore::open_with_reserve`] keeping [`DEFAULT_MIN_FREE_BYTES`] free.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_reserve(dir, DEFAULT_MIN_FREE_BYTES)
    }

    /// Opens the store in `dir`, creating the directory, the database and its column families
    /// if missing. Fails with [`StoreError::Locked`] if another store has `dir` open. Writes
    /// that would leave less than `min_free_bytes` free on its disk are refused.
    ///
    /// Stats are counted here by scanning every item in RocksDB once and listing the chunk
    /// files, paid once per open instead of per call.
    pub fn open_with_reserve(dir: &Path, min_free_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.to_path_buf();
        std::fs::create_dir_all(dir).map_err(|err| StoreError::Open { path: path.clone(), detail: err.to_string() })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = ItemKind::ALL.map(|kind| ColumnFamilyDescriptor::new(kind.name(), family_options(kind)));
        let db = DB::open_cf_descriptors(&options, dir, families).map_err(|err| open_error(&path, err))?;

        let started = Instant::now();
        check_format(&db, &path)?;
        let created_ms = created_ms(&db)?;
        let stats = scan_stats(&db)?;
        let (files, found) = ChunkFiles::open(dir)
            .map_err(|err| StoreError::Open { path: path.clone(), detail: format!("chunk files: {err}") })?;
        let (items, bytes) = (stats.items + found.keys.len() as u64, stats.bytes + found.bytes);
        let scan_ms = started.elapsed().as_millis() as u64;
        tracing::info!(path = %path.display(), items, bytes, scan_ms, "store opened");
        Ok(Self {
            db,
            files,
            path,
            stripes: std::array::from_fn(|_| Mutex::new(())),
            items: AtomicU64::new(items),
            bytes: AtomicU64::new(bytes),
            created_ms,
            reserve: Reserve::new(dir, min_free_bytes),
        })
    }

    /// The bytes stored under `key`, unverified: a chunk file's, or RocksDB's.
    fn read_raw(&self, key: &ItemKey) -> Result<Option<Vec<u8>>, StoreError> {
        if key.kind == ItemKind::Chunk
            && let Some(value) = self.files.read(key).map_err(io("read a chunk file"))?
        {
            return Ok(Some(value));
        }
        self.db.get_cf(self.family(key.kind), key.id).map_err(engine("read"))
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

    /// [`Store::put`] of verified items, each key once. The chunks and manifests it writes
    /// must leave the reserve free; name records and reference sets may use it, since
    /// they are small and what lets space come back (a delete's tombstone, a reference's
    /// death). A put that finds every item in place writes nothing and succeeds.
    fn put_unique(&self, unique: Vec<&(ItemKey, Bytes)>) -> Result<Vec<(ItemKey, Bytes)>, StoreError> {
        let _stripes = self.lock_stripes(unique.iter().map(|(key, _)| key));
        let mut batch = WriteBatch::default();
        let mut files = Vec::new();
        let mut kept = Vec::new();
        let (mut items_added, mut bytes_delta, mut data_bytes) = (0, 0i64, 0u64);
        for (key, given) in unique {
            let (value, old_len) = match self.read_raw(key)? {
                // A verified copy is already durable (the put that wrote it synced before
                // releasing this stripe); it stays unless the new one supersedes it (a newer
                // version of a name record) or merges with it (a reference set).
                Some(old) if verify_item(key, &old).is_ok() => match resolve(key, &old, given) {
                    Kept::Old => {
                        if in_file(key, old.len()) {
                            self.files.make_durable(key).map_err(io("sync a chunk directory"))?;
                        }
                        if old != **given {
                            kept.push((*key, Bytes::from(old)));
                        }
                        continue;
                    }
                    Kept::New => (given.clone(), old.len()),
                    Kept::Merged(merged) => {
                        // A merge can outgrow what one item may hold: refuse the write
                        // rather than keep a value that no read would accept.
                        verify_item(key, &merged).map_err(|source| StoreError::Invalid { key: *key, source })?;
                        let merged = Bytes::from(merged);
                        kept.push((*key, merged.clone()));
                        (merged, old.len())
                    }
                },
                // Corrupt bytes that the verified value replaces.
                Some(old) => (given.clone(), old.len()),
                None => {
                    items_added += 1;
                    (given.clone(), 0)
                }
            };
            bytes_delta += value.len() as i64 - old_len as i64;
            if !key.kind.is_mergeable() {
                data_bytes += value.len() as u64;
            }
            if in_file(key, value.len()) {
                files.push((key, value));
            } else {
                batch.put_cf(self.family(key.kind), key.id, &value);
            }
        }
        if data_bytes > 0 {
            self.reserve.admit(data_bytes)?;
        }
        // Chunks before the batch that may hold their manifest.
        for (key, value) in files {
            self.files.write(key, &value).map_err(io("write a chunk file"))?;
        }
        if !batch.is_empty() {
            self.db.write_opt(batch, &synced()).map_err(engine("write"))?;
        }
        self.items.fetch_add(items_added, Ordering::Relaxed);
        if bytes_delta >= 0 {
            self.bytes.fetch_add(bytes_delta.unsigned_abs(), Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(bytes_delta.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(kept)
    }

    /// Stores `value` under `key` unverified and uncounted, as a corrupted disk would.
    pub(crate) fn write_raw(&self, key: &ItemKey, value: &[u8]) -> Result<(), StoreError> {
        if in_file(key, value.len()) {
            return self.files.write(key, value).map_err(io("write a chunk file"));
        }
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
        self.reserve.note(self.put_unique(unique))
    }

    fn get(&self, key: &ItemKey) -> Result<Option<Bytes>, StoreError> {
        let Some(value) = self.read_raw(key)? else {
            return Ok(None);
        };
        verify_item(key, &value).map_err(|source| StoreError::Corrupt { key: *key, source })?;
        Ok(Some(Bytes::from(value)))
    }

    fn contains(&self, key: &ItemKey) -> Result<bool, StoreError> {
        if key.kind == ItemKind::Chunk && self.files.len(key).map_err(io("read a chunk file"))?.is_some() {
            return Ok(true);
        }
        let value = self.db.get_pinned_cf(self.family(key.kind), key.id);
        Ok(value.map_err(engine("read"))?.is_some())
    }

    fn delete(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let _stripe = self.lock_stripes(std::iter::once(key));
        let removed_file =
            if key.kind == ItemKind::Chunk { self.files.remove(key).map_err(io("remove a chunk file"))? } else { None };
        let old_bytes = match removed_file {
            Some(len) => len,
            None => {
                let family = self.family(key.kind);
                let old = self.db.get_pinned_cf(family, key.id).map_err(engine("read"))?;
                let Some(old_bytes) = old.map(|old| old.len() as u64) else {
                    return Ok(false);
                };
                self.db.delete_cf_opt(family, key.id, &synced()).map_err(engine("delete"))?;
                old_bytes
            }
        };
        self.items.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(old_bytes, Ordering::Relaxed);
        Ok(true)
    }

    /// Lists chunk files' names and RocksDB's keys; reads no value.
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
        if kind == ItemKind::Chunk {
            keys.extend(self.files.list().map_err(io("list chunk files"))?.keys);
            keys.sort_unstable();
        }
        Ok(keys)
    }

    fn stats(&self) -> StoreStats {
        StoreStats { items: self.items.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }

    fn space(&self) -> Space {
        self.reserve.space()
    }

    fn created_ms(&self) -> u64 {
        self.created_ms
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get([META_PREFIX, name.as_bytes()].concat()).map_err(engine("read a bookkeeping record"))
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let key = [META_PREFIX, name.as_bytes()].concat();
        self.db.put_opt(key, value, &synced()).map_err(engine("write a bookkeeping record"))
    }

    fn corrupt(&self, key: &ItemKey) -> Result<bool, StoreError> {
        let _stripe = self.lock_stripes(std::iter::once(key));
        let Some(mut value) = self.read_raw(key)? else {
            return Ok(false);
        };
        let Some(first) = value.first_mut() else { return Ok(false) };
        *first ^= 0xff;
        self.write_raw(key, &value)?;
        Ok(true)
    }
}

/// Size of one chunk memtable: it holds chunks under [`CHUNK_FILE_MIN_BYTES`] only, and
/// the default 64 MiB (twice) would dominate a daemon's memory.
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
            options.set_compression_type(DBCompressionType::None);
            options.set_write_buffer_size(CHUNK_MEMTABLE_BYTES);
            options.set_max_write_buffer_number(2);
        }
        // Manifests (64 bytes a chunk), name records and reference sets are small and read whole: inline
        // values suit them.
        ItemKind::Manifest | ItemKind::Name | ItemKind::References => {}
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

fn holds_items(db: &DB) -> bool {
    ItemKind::ALL.into_iter().any(|kind| {
        let mut iter = db.raw_iterator_cf(family(db, kind));
        iter.seek_to_first();
        iter.valid()
    })
}

/// Whether the value goes to a chunk file.
fn in_file(key: &ItemKey, len: usize) -> bool {
    key.kind == ItemKind::Chunk && len >= CHUNK_FILE_MIN_BYTES
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

/// The recorded creation time, recorded now if missing.
fn created_ms(db: &DB) -> Result<u64, StoreError> {
    if let Some(bytes) = db.get(CREATED_KEY).map_err(engine("read the store's creation time"))?
        && let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice())
    {
        return Ok(u64::from_le_bytes(bytes));
    }
    let now = crate::now_ms();
    db.put_opt(CREATED_KEY, now.to_le_bytes(), &synced()).map_err(engine("record the store's creation time"))?;
    Ok(now)
}

fn engine(op: &'static str) -> impl FnOnce(rocksdb::Error) -> StoreError {
    // RocksDB's message carries the OS error's text; its kind only says "I/O error".
    move |err| {
        let detail = err.into_string();
        if detail.contains("No space left on device") || detail.contains("Disk quota exceeded") {
            StoreError::Full { op, detail }
        } else {
            StoreError::Engine { op, detail }
        }
    }
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    move |err| {
        let detail = err.to_string();
        if space::is_full(&err) { StoreError::Full { op, detail } } else { StoreError::Engine { op, detail } }
    }
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

    /// Issue 11, defect 9: a put whose directory sync failed is refused, but its chunk's
    /// file is in place, and a later put of the chunk found it and acked without a sync.
    #[test]
    fn a_chunk_whose_directory_sync_failed_is_not_acked_by_a_later_put() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let value = Bytes::from(vec![5u8; CHUNK_FILE_MIN_BYTES]);
        let item = (ItemKey::chunk(blake3::hash(&value).into()), value);
        store.files.fail_dir_syncs.store(true, Relaxed);
        assert!(store.put(std::slice::from_ref(&item)).is_err());
        assert!(store.put(std::slice::from_ref(&item)).is_err(), "acked a chunk whose rename may not survive a crash");
        store.files.fail_dir_syncs.store(false, Relaxed);
        assert_eq!(store.put(std::slice::from_ref(&item)).unwrap(), []);
        store.files.fail_dir_syncs.store(true, Relaxed);
        assert_eq!(store.put(std::slice::from_ref(&item)).unwrap(), [], "once synced, no more syncs are needed");
    }

    #[test]
    fn the_creation_time_survives_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let before = crate::now_ms();
        let created = RocksStore::open(dir.path()).unwrap().created_ms();
        assert!((before..=crate::now_ms()).contains(&created), "{created}");
        assert_eq!(RocksStore::open(dir.path()).unwrap().created_ms(), created);
    }

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
    fn large_chunks_are_files_and_small_ones_stay_in_rocksdb() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        let chunk = |len: usize| {
            let value = Bytes::from(vec![7; len]);
            (ItemKey::chunk(blake3::hash(&value).into()), value)
        };
        let (large, small) = (chunk(CHUNK_FILE_MIN_BYTES), chunk(CHUNK_FILE_MIN_BYTES - 1));
        store.put(&[large.clone(), small.clone()]).unwrap();
        assert_eq!(store.files.len(&large.0).unwrap(), Some(CHUNK_FILE_MIN_BYTES as u64));
        assert_eq!(store.files.len(&small.0).unwrap(), None);
        assert!(store.db.get_cf(store.family(ItemKind::Chunk), small.0.id).unwrap().is_some());
        let mut both = vec![large.0, small.0];
        both.sort_unstable();
        assert_eq!(store.keys(ItemKind::Chunk).unwrap(), both);

        // Deleting a file chunk gives its space back at once.
        assert!(store.delete(&large.0).unwrap());
        assert_eq!(store.files.len(&large.0).unwrap(), None);
        assert_eq!(store.stats(), StoreStats { items: 1, bytes: small.1.len() as u64 });
    }

    #[test]
    fn a_chunk_half_written_before_a_crash_is_gone_after_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let value = Bytes::from(vec![9; 1 << 20]);
        let key = ItemKey::chunk(blake3::hash(&value).into());
        {
            let store = RocksStore::open(dir.path()).unwrap();
            store.put(&[(key, value.clone())]).unwrap();
        }
        // What a crash between write and rename leaves: a partial file beside the chunk.
        let partial = store_path_of(dir.path(), &key).with_extension("partial");
        std::fs::write(&partial, &value[..1000]).unwrap();
        let store = RocksStore::open(dir.path()).unwrap();
        assert!(!partial.exists());
        assert_eq!(store.get(&key).unwrap(), Some(value));
        assert_eq!(store.stats(), StoreStats { items: 1, bytes: 1 << 20 });
    }

    fn store_path_of(dir: &Path, key: &ItemKey) -> PathBuf {
        dir.join("chunks").join(format!("{:02x}", key.id[0])).join(shoal_core::ChunkId(key.id).to_hex())
    }

    #[test]
    fn open_creates_missing_directories() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = RocksStore::open(&dir.path().join("a/b")).unwrap();
        assert_eq!(store.stats(), StoreStats::default());
    }
}
