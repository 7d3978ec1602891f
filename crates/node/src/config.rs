//! A node's settings: their defaults, and the combinations it refuses to start with.

use std::time::Duration;

use shoal_core::settings::{NetworkSettings, SettingsError};

/// Replica settings. Those in [`NodeConfig::network_settings`] must agree across the
/// network; the window bounds memory per request.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// R: how many peers hold every item.
    pub replication_factor: usize,
    /// Chunks in flight per put or get: memory per transfer is about this many MiB times
    /// (1 + R) on a put.
    pub chunks_in_flight: usize,
    /// The least a read waits for a holder before it asks the next one too; a holder
    /// whose answers usually take longer is given three times its usual.
    pub read_hedge_after: Duration,
    /// How long a peer whose connections closed still counts as a holder.
    pub failure_grace: Duration,
    /// How long after a peer arrives the holders it displaced are still asked: longer
    /// than a handoff takes.
    pub move_window: Duration,
    /// Time between repair rounds when nothing changes.
    pub anti_entropy_interval: Duration,
    /// Repair transfers running at once.
    pub repair_concurrency: usize,
    /// Average bytes per second that repair may move.
    pub repair_bytes_per_sec: u64,
    /// Average bytes per second that scrub may read.
    pub scrub_bytes_per_sec: u64,
    /// Pause between two scrub passes over every item.
    pub scrub_pause: Duration,
    /// How long a deleted name's tombstone is kept: longer than any peer may be away and
    /// still come back with its data (a peer away longer must be wiped before it rejoins),
    /// or the old binding could return with it.
    pub tombstone_lifetime: Duration,
    /// How long every reference to a manifest or chunk must have been dead before the
    /// item is deleted.
    pub gc_grace: Duration,
    /// Time between collection rounds; several must fit in `gc_grace`.
    pub gc_interval: Duration,
    /// How long the chunks a put wrote are kept for it before its object refers to them:
    /// a put that takes longer fails.
    pub upload_lifetime: Duration,
    /// Fault injection for tests and drills: this node's wall clock runs this many ms
    /// ahead of the system's (behind, if negative).
    pub clock_skew_ms: i64,
}

impl NodeConfig {
    /// The settings that must agree across the network.
    pub fn network_settings(&self) -> NetworkSettings {
        let ms = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        NetworkSettings {
            replication_factor: self.replication_factor,
            failure_grace_ms: ms(self.failure_grace),
            gc_grace_ms: ms(self.gc_grace),
            tombstone_lifetime_ms: ms(self.tombstone_lifetime),
        }
    }

    /// Refuses settings that cannot work: those the network shares, and this peer's own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.network_settings().validate()?;
        let refuse = |reason: &str| Err(SettingsError::new(reason));
        if self.chunks_in_flight == 0 || self.repair_concurrency == 0 {
            return refuse("chunks_in_flight and repair_concurrency must be positive");
        }
        if self.repair_bytes_per_sec == 0 || self.scrub_bytes_per_sec == 0 {
            return refuse("repair and scrub rates must be positive");
        }
        if self.anti_entropy_interval.is_zero() || self.upload_lifetime.is_zero() {
            return refuse("anti_entropy_interval and upload_lifetime must be positive");
        }
        // A reference dies at one round and its item goes at a later one: several rounds
        // must fit in the grace period, or a put reusing the chunk could lose the race.
        if self.gc_interval.is_zero() || self.gc_interval * 3 > self.gc_grace {
            return refuse("gc_interval must be positive and at most a third of gc_grace");
        }
        Ok(())
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            replication_factor: 3,
            chunks_in_flight: 8,
            read_hedge_after: Duration::from_millis(200),
            failure_grace: Duration::from_secs(30),
            move_window: Duration::from_secs(3600),
            anti_entropy_interval: Duration::from_secs(30),
            repair_concurrency: 4,
            repair_bytes_per_sec: 64 << 20,
            scrub_bytes_per_sec: 8 << 20,
            scrub_pause: Duration::from_secs(3600),
            tombstone_lifetime: Duration::from_secs(7 * 24 * 3600),
            gc_grace: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(300),
            upload_lifetime: Duration::from_secs(24 * 3600),
            clock_skew_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(NodeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let defaults = NodeConfig::default();
        for (config, reason) in [
            (NodeConfig { tombstone_lifetime: Duration::ZERO, ..defaults.clone() }, "tombstone_lifetime"),
            (NodeConfig { gc_grace: Duration::ZERO, ..defaults.clone() }, "gc_grace must be positive"),
            (NodeConfig { upload_lifetime: Duration::ZERO, ..defaults.clone() }, "upload_lifetime"),
            (NodeConfig { gc_interval: defaults.gc_grace, ..defaults.clone() }, "a third of gc_grace"),
            (NodeConfig { repair_concurrency: 0, ..defaults.clone() }, "repair_concurrency"),
        ] {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
    }
}
