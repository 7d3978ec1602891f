//! The data dir: one daemon at a time, and the files that tell scripts where it listens.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Holds the data dir's lock for as long as it lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the dir if needed and takes its lock; a second daemon on the same dir fails
    /// here, before it touches anything else.
    pub fn lock(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path).with_context(|| format!("cannot create data dir {}", path.display()))?;
        let lock_path = path.join("shoald.lock");
        let mut lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            anyhow::bail!("data dir {} is in use by another shoald (pid {})", path.display(), holder.trim());
        }
        lock.set_len(0)?;
        lock.rewind()?;
        write!(lock, "{}", std::process::id())?;
        Ok(Self { path: path.to_owned(), _lock: lock })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `name` through a rename, so readers never see half a file.
    pub fn publish(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let partial = self.join(&format!("{name}.partial"));
        std::fs::write(&partial, contents)?;
        std::fs::rename(&partial, self.join(name))?;
        Ok(())
    }
}
