//! The wall clock that versions, upload leases and reference deaths are read from.
//!
//! Node tests run under tokio's paused time, which the system clock does not follow; there
//! the wall clock is tokio's clock, anchored once per process, so that advancing time in a
//! test moves leases and grace periods as it moves timers.

/// Milliseconds since the Unix epoch.
#[cfg(not(test))]
pub(crate) fn wall_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch, as far as tokio's (possibly paused) clock has moved
/// since the first call in this process.
#[cfg(test)]
pub(crate) fn wall_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};
    static ANCHOR: OnceLock<(std::time::Instant, u64)> = OnceLock::new();
    let (instant, wall) = *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (tokio::time::Instant::now().into_std(), wall)
    });
    wall + tokio::time::Instant::now().into_std().saturating_duration_since(instant).as_millis() as u64
}
