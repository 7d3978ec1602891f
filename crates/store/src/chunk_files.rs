//! Large chunks as files, one per chunk, under `chunks/<first byte>/<id>`.
//!
//! Through RocksDB a chunk is written twice, to the write-ahead log and at memtable flush
//! to a table or blob file, and sits in a memtable in between. A file is written once:
//! one copy into the page cache, one `fdatasync`. A chunk is written to a `.partial` file
//! that is synced, then renamed into place and its directory synced, so a crash leaves
//! either the whole chunk or a `.partial` file, which the next open removes. A directory
//! whose sync failed is remembered: a chunk renamed into it is not durable, so a later put
//! of that chunk syncs the directory before it counts the file as stored. Deleting a
//! chunk gives its space back at once.
//!
//! Nothing here verifies or counts: [`RocksStore`](crate::RocksStore) does both, as for
//! the items it keeps in RocksDB, and holds the key's stripe lock around every write and
//! removal (a reader sees a chunk whole or not at all, thanks to the rename).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shoal_core::{ChunkId, ItemKey};

const PARTIAL: &str = "partial";

#[derive(Debug)]
pub(crate) struct ChunkFiles {
    dir: PathBuf,
    /// The subdirectories (by first key byte) whose last sync failed.
    unsynced: Mutex<HashSet<u8>>,
    /// Fault injection for tests: every directory sync fails.
    #[cfg(test)]
    pub fail_dir_syncs: std::sync::atomic::AtomicBool,
}

/// The chunk files on disk.
pub(crate) struct Found {
    pub keys: Vec<ItemKey>,
    pub bytes: u64,
}

impl ChunkFiles {
    /// Opens (creating) the chunk directory in `dir`, removes what a crash left half
    /// written, and lists the chunks held.
    pub fn open(dir: &Path) -> io::Result<(Self, Found)> {
        let files = Self {
            dir: dir.join("chunks"),
            unsynced: Mutex::new(HashSet::new()),
            #[cfg(test)]
            fail_dir_syncs: std::sync::atomic::AtomicBool::new(false),
        };
        // The directories must survive a crash before any chunk goes in them, and a sync
        // that failed before a restart is not remembered: sync them all once here.
        for prefix in 0..=u8::MAX {
            let subdir = files.dir.join(format!("{prefix:02x}"));
            fs::create_dir_all(&subdir)?;
            sync_dir(&subdir)?;
        }
        sync_dir(&files.dir)?;
        sync_dir(dir)?;
        let found = files.walk(|partial| fs::remove_file(partial))?;
        Ok((files, found))
    }

    /// The chunks held, in key order.
    pub fn list(&self) -> io::Result<Found> {
        // A partial file now is a write in progress.
        self.walk(|_| Ok(()))
    }

    fn walk(&self, mut on_partial: impl FnMut(&Path) -> io::Result<()>) -> io::Result<Found> {
        let mut found = Found { keys: Vec::new(), bytes: 0 };
        for prefix in 0..=u8::MAX {
            for entry in fs::read_dir(self.dir.join(format!("{prefix:02x}")))? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                match name.parse::<ChunkId>() {
                    Ok(id) => {
                        found.keys.push(ItemKey::chunk(id));
                        found.bytes += entry.metadata()?.len();
                    }
                    Err(_) if name.ends_with(PARTIAL) => on_partial(&entry.path())?,
                    Err(_) => {
                        return Err(io::Error::new(
                            ErrorKind::InvalidData,
                            format!("unexpected file {} among chunks", entry.path().display()),
                        ));
                    }
                }
            }
        }
        found.keys.sort_unstable();
        Ok(found)
    }

    fn subdir(&self, key: &ItemKey) -> PathBuf {
        self.dir.join(format!("{:02x}", key.id[0]))
    }

    fn path(&self, key: &ItemKey) -> PathBuf {
        self.subdir(key).join(ChunkId(key.id).to_hex())
    }

    /// The chunk's bytes as stored, unverified; `None` if there is no file.
    pub fn read(&self, key: &ItemKey) -> io::Result<Option<Vec<u8>>> {
        absent_as_none(fs::read(self.path(key)))
    }

    /// The chunk's size on disk; `None` if there is no file.
    pub fn len(&self, key: &ItemKey) -> io::Result<Option<u64>> {
        absent_as_none(fs::metadata(self.path(key)).map(|meta| meta.len()))
    }

    /// Writes the chunk durably, replacing any file there: it is whole on disk, under its
    /// name, when this returns.
    pub fn write(&self, key: &ItemKey, value: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let partial = path.with_extension(PARTIAL);
        let written = File::create(&partial).and_then(|mut file| {
            file.write_all(value)?;
            file.sync_data()?;
            fs::rename(&partial, &path)
        });
        if let Err(error) = written {
            // On a full disk the partial file holds the very space a retry needs.
            let _ = fs::remove_file(&partial);
            return Err(error);
        }
        self.sync_subdir(key)
    }

    /// Makes sure the chunk's file, found in place, is durable: a put that finds it may
    /// ack only then.
    pub fn make_durable(&self, key: &ItemKey) -> io::Result<()> {
        let pending = self.unsynced.lock().expect("never poisoned").contains(&key.id[0]);
        if pending { self.sync_subdir(key) } else { Ok(()) }
    }

    fn sync_subdir(&self, key: &ItemKey) -> io::Result<()> {
        #[cfg(test)]
        let result = if self.fail_dir_syncs.load(std::sync::atomic::Ordering::Relaxed) {
            Err(io::Error::other("injected directory sync failure"))
        } else {
            sync_dir(&self.subdir(key))
        };
        #[cfg(not(test))]
        let result = sync_dir(&self.subdir(key));
        let mut unsynced = self.unsynced.lock().expect("never poisoned");
        match result {
            Ok(()) => unsynced.remove(&key.id[0]),
            Err(_) => unsynced.insert(key.id[0]),
        };
        result
    }

    /// Removes the chunk's file; its size, or `None` if there was none. Not synced: a
    /// chunk that comes back after a crash is collected again.
    pub fn remove(&self, key: &ItemKey) -> io::Result<Option<u64>> {
        let Some(len) = self.len(key)? else { return Ok(None) };
        absent_as_none(fs::remove_file(self.path(key)).map(|()| len))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn absent_as_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}
