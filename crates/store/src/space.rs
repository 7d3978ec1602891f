//! Room on the store's disk. A store keeps a reserve free and refuses data (chunks,
//! manifests) that would eat into it, so a filling disk makes writes fail cleanly, with a
//! reason, before the engine itself runs out of room mid-write; the reserve is what
//! RocksDB's own flushes and compactions need, and what the small writes that give space
//! back (a delete's tombstone, the death of a reference) use. A write that finds the disk full anyway
//! (another process filled it) fails the same way and keeps nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Space, StoreError};

/// What a store keeps free unless told otherwise.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    min_free_bytes: u64,
    /// The last write failed for lack of space.
    found_full: AtomicBool,
}

impl Reserve {
    pub fn new(path: &Path, min_free_bytes: u64) -> Self {
        Self { path: path.to_owned(), min_free_bytes, found_full: AtomicBool::new(false) }
    }

    /// Refuses a write of `bytes` that would leave less than the reserve free. A file
    /// system that cannot say what it has left is not taken as full: the write goes on.
    pub fn admit(&self, bytes: u64) -> Result<(), StoreError> {
        let Ok(free) = free_bytes(&self.path) else { return Ok(()) };
        if free.saturating_sub(bytes) < self.min_free_bytes {
            return Err(StoreError::Full {
                op: "write",
                detail: format!(
                    "{bytes} bytes asked, {free} free, {} kept in reserve ({})",
                    self.min_free_bytes,
                    self.path.display()
                ),
            });
        }
        Ok(())
    }

    /// Remembers whether a write found the disk full (refused by [`Reserve::admit`] or by
    /// the disk itself), for [`Reserve::space`].
    pub fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.found_full.store(matches!(result, Err(StoreError::Full { .. })), Ordering::Relaxed);
        result
    }

    pub fn space(&self) -> Space {
        let free_bytes = free_bytes(&self.path).unwrap_or(u64::MAX);
        Space { free_bytes, full: free_bytes < self.min_free_bytes || self.found_full.load(Ordering::Relaxed) }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path`.
fn free_bytes(path: &Path) -> io::Result<u64> {
    let stats = rustix::fs::statvfs(path)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Whether an I/O error says the disk (or the user's quota) is full.
pub(crate) fn is_full(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Issue 11, defect 9: a disk filled to the last byte. Each test mounts a small tmpfs of
/// its own (root only: elsewhere it says so and passes nothing off as tested).
#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use shoal_core::names::Version;
    use shoal_core::references::{References, Referrer, Upload};
    use shoal_core::{ChunkId, ItemKey, codec};

    use crate::{RocksStore, Store, StoreError};

    /// A tmpfs of `mib` MiB, unmounted on drop.
    struct SmallDisk {
        dir: tempfile::TempDir,
    }

    impl SmallDisk {
        /// `None`, saying so, where this process may not mount (not root, or a container
        /// without the right to).
        fn mount(mib: u64) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let options = format!("size={mib}m");
            let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(dir.path()).output();
            if !mounted.as_ref().is_ok_and(|out| out.status.success()) {
                eprintln!("skipped: cannot mount a small tmpfs here (needs root): {mounted:?}");
                return None;
            }
            Some(Self { dir })
        }

        /// Writes a file until the disk has not one byte left.
        fn fill(&self) {
            let mut filler = File::create(self.dir.path().join("filler")).unwrap();
            for size in [1 << 20, 4 << 10, 1] {
                while filler.write_all(&vec![0; size]).is_ok() {}
            }
            assert_eq!(super::free_bytes(self.dir.path()).unwrap(), 0);
        }

        fn free(&self) {
            std::fs::remove_file(self.dir.path().join("filler")).unwrap();
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }

    fn item(len: usize, seed: u8) -> (ItemKey, Bytes) {
        let value = Bytes::from(vec![seed; len]);
        (ItemKey::chunk(ChunkId::from(blake3::hash(&value))), value)
    }

    fn partial_files(dir: &std::path::Path) -> usize {
        let chunks = dir.join("store/chunks");
        std::fs::read_dir(chunks)
            .unwrap()
            .flat_map(|subdir| std::fs::read_dir(subdir.unwrap().path()).unwrap())
            .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|ext| ext == "partial"))
            .count()
    }

    /// With no reserve, writes meet the full disk itself: RocksDB's write-ahead log and a
    /// chunk file both fail, keep nothing (no partial file holds space), reads go on, and
    /// writes work again once space is freed, without a restart; nothing acked is lost.
    #[test]
    fn a_disk_full_to_the_last_byte_refuses_writes_and_recovers() {
        let Some(disk) = SmallDisk::mount(32) else { return };
        let path = disk.dir.path().join("store");
        let store = RocksStore::open_with_reserve(&path, 0).unwrap();
        let (small, large) = (item(100, 1), item(1 << 20, 2));
        store.put(&[small.clone(), large.clone()]).unwrap();
        disk.fill();

        let new_large = item(1 << 20, 3);
        let error = store.put(std::slice::from_ref(&new_large)).unwrap_err();
        assert!(matches!(error, StoreError::Full { .. }), "{error}");
        assert_eq!(partial_files(disk.dir.path()), 0, "a failed write left its partial file");
        assert!(store.space().full);
        // Small writes still fit in the log's last page, until they do not.
        let mut acked = vec![small, large];
        let error = (0u32..100_000)
            .find_map(|n| {
                let next =
                    (ItemKey::chunk(ChunkId::from(blake3::hash(&n.to_le_bytes()))), n.to_le_bytes().to_vec().into());
                store.put(std::slice::from_ref(&next)).map(|_| acked.push(next)).err()
            })
            .expect("100,000 writes on a full disk all succeeded");
        assert!(matches!(error, StoreError::Full { .. }), "{error}");
        for (key, value) in &acked {
            assert_eq!(store.get(key).unwrap().as_ref(), Some(value), "reads go on");
        }

        disk.free();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(error) = store.put(std::slice::from_ref(&new_large)) {
            assert!(Instant::now() < deadline, "writes did not recover within 30 s of freeing space: {error}");
            std::thread::sleep(Duration::from_millis(100));
        }
        acked.push(new_large);
        assert!(!store.space().full);
        drop(store);
        let store = RocksStore::open_with_reserve(&path, 0).unwrap();
        for (key, value) in acked {
            assert_eq!(store.get(&key).unwrap(), Some(value), "an acked write was lost");
        }
    }

    /// With a reserve, data stops while it is still free, with a reason; a write of what
    /// is already there still succeeds, and so do the reference sets that let collection
    /// give space back.
    #[test]
    fn writes_that_would_eat_into_the_reserve_are_refused() {
        let Some(disk) = SmallDisk::mount(32) else { return };
        let store = RocksStore::open_with_reserve(&disk.dir.path().join("store"), 16 << 20).unwrap();
        let mut stored = Vec::new();
        let error = loop {
            let next = item(1 << 20, stored.len() as u8);
            match store.put(std::slice::from_ref(&next)) {
                Ok(_) => stored.push(next),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StoreError::Full { .. }) && error.to_string().contains("reserve"), "{error}");
        assert!(!stored.is_empty() && stored.len() < 16, "{} chunks stored", stored.len());
        assert!(store.space().full && store.space().free_bytes >= 15 << 20, "{:?}", store.space());
        assert_eq!(store.put(&stored[..1]).unwrap(), [], "a put of what is there writes nothing");
        let lease = Upload { id: Version { wall_ms: 1, logical: 0, writer: 0 }, until_ms: 2 };
        let mut set = References::of(Referrer::Upload(lease));
        set.kill(&Referrer::Upload(lease), 3);
        let death = (ItemKey::references(stored[0].0.id), Bytes::from(codec::encode(&set)));
        store.put(&[death]).expect("the death of a reference is refused on a full disk");
    }
}
