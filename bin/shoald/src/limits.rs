//! Process limits an ordinary load would otherwise exhaust.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit, and returns the limit before
/// and after (`None`: unlimited). Every chunk file read or written, every RocksDB table
/// and every connection holds a descriptor; the usual soft limit of 1,024 runs out under
/// a few hundred concurrent transfers, and a peer out of descriptors can store and serve
/// nothing.
pub fn raise_open_files_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    let mut limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok((before, limit.current))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum;
        let low = hard.map_or(1024, |hard| hard.min(1024));
        setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(low), maximum: hard }).unwrap();
        assert_eq!(raise_open_files_limit().unwrap(), (Some(low), hard));
        assert_eq!(getrlimit(Resource::Nofile).current, hard);
    }
}
