//! The settings every peer of a network must share, because together they decide where a
//! copy lives and when it may go: R places it, the failure grace says when a silent holder
//! is replaced, `gc_grace` how long a dead reference keeps its item, and the tombstone
//! lifetime how long a deletion is remembered. Peers announce them (identify) and hold
//! data only with peers that announce the same.
//!
//! The upload lifetime is not among them: each lease carries its own deadline.
//!
//! Beside them a peer announces since when it holds copies, which is its own: reads use it
//! to find the holders a newly arrived peer displaced (see the node's policy).

use std::fmt;

/// The protocol part of an announcement; a peer of another protocol holds nothing here.
pub const PROTOCOL: &str = "/shoal/9";

/// Largest replication factor a network may have.
pub const REPLICATION_FACTOR_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkSettings {
    pub replication_factor: usize,
    pub failure_grace_ms: u64,
    pub gc_grace_ms: u64,
    pub tombstone_lifetime_ms: u64,
}

/// Settings that cannot work together, named for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl SettingsError {
    pub fn new(reason: &str) -> Self {
        Self(reason.to_owned())
    }
}

impl NetworkSettings {
    /// Refuses combinations under which the deletion rule cannot hold.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let refuse = |reason: &str| Err(SettingsError::new(reason));
        if !(1..=REPLICATION_FACTOR_MAX).contains(&self.replication_factor) {
            return refuse("replication factor must be 1 to 16");
        }
        if self.gc_grace_ms == 0 {
            return refuse("gc_grace must be positive: a put that reuses a chunk needs time to refer to it");
        }
        // A dead reference set is forgotten after the tombstone lifetime: if its item were
        // still waiting out gc_grace then, the item would have no set to be judged by.
        if self.tombstone_lifetime_ms <= self.gc_grace_ms {
            return refuse("tombstone_lifetime must be longer than gc_grace");
        }
        // A peer away longer than the tombstone lifetime could bring back what was deleted
        // meanwhile; one away for less than the failure grace is not even replaced yet.
        if self.tombstone_lifetime_ms <= self.failure_grace_ms {
            return refuse("tombstone_lifetime must be longer than failure_grace");
        }
        Ok(())
    }

    /// What differs between these settings and `theirs`, one `name ours/theirs` per
    /// setting; empty when they agree.
    pub fn differences(&self, theirs: &Self) -> Vec<String> {
        let pairs = [
            ("replication", self.replication_factor as u64, theirs.replication_factor as u64),
            ("failure_grace_ms", self.failure_grace_ms, theirs.failure_grace_ms),
            ("gc_grace_ms", self.gc_grace_ms, theirs.gc_grace_ms),
            ("tombstone_lifetime_ms", self.tombstone_lifetime_ms, theirs.tombstone_lifetime_ms),
        ];
        pairs
            .into_iter()
            .filter(|(_, ours, theirs)| ours != theirs)
            .map(|(name, ours, theirs)| format!("{name} {ours} here, {theirs} there"))
            .collect()
    }
}

/// What a peer says of itself through identify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    pub settings: NetworkSettings,
    /// When the peer's store was created, in ms since the Unix epoch: it holds nothing it
    /// was not given since.
    pub holding_since_ms: u64,
}

impl Announcement {
    /// What another peer announced; `None` if it speaks another protocol or its
    /// announcement does not parse.
    pub fn parse(announcement: &str) -> Option<Self> {
        let mut words = announcement.split(' ');
        if words.next()? != PROTOCOL {
            return None;
        }
        let mut value =
            |name: &str| -> Option<u64> { words.next()?.strip_prefix(name)?.strip_prefix('=')?.parse().ok() };
        let settings = NetworkSettings {
            replication_factor: usize::try_from(value("replication")?).ok()?,
            failure_grace_ms: value("failure_grace_ms")?,
            gc_grace_ms: value("gc_grace_ms")?,
            tombstone_lifetime_ms: value("tombstone_lifetime_ms")?,
        };
        let holding_since_ms = value("holding_since_ms")?;
        words.next().is_none().then_some(Self { settings, holding_since_ms })
    }
}

/// E.g. `/shoal/9 replication=3 failure_grace_ms=30000 ... holding_since_ms=1796000000000`.
impl fmt::Display for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        write!(
            f,
            "{PROTOCOL} replication={} failure_grace_ms={} gc_grace_ms={} tombstone_lifetime_ms={} holding_since_ms={}",
            settings.replication_factor,
            settings.failure_grace_ms,
            settings.gc_grace_ms,
            settings.tombstone_lifetime_ms,
            self.holding_since_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DEFAULTS: NetworkSettings = NetworkSettings {
        replication_factor: 3,
        failure_grace_ms: 30_000,
        gc_grace_ms: 3_600_000,
        tombstone_lifetime_ms: 604_800_000,
    };

    proptest! {
        #[test]
        fn announcements_round_trip(r in 1usize..=16, failure: u64, gc: u64, tombstone: u64, since: u64) {
            let settings = NetworkSettings {
                replication_factor: r, failure_grace_ms: failure, gc_grace_ms: gc, tombstone_lifetime_ms: tombstone,
            };
            let announcement = Announcement { settings, holding_since_ms: since };
            prop_assert_eq!(Announcement::parse(&announcement.to_string()), Some(announcement));
        }
    }

    #[test]
    fn other_protocols_and_garbage_are_not_announcements() {
        let ours = Announcement { settings: DEFAULTS, holding_since_ms: 1 }.to_string();
        for theirs in [
            "/foreign-dht/1.0.0".to_owned(),
            "/shoal/6 replication=3".to_owned(),
            ours.replace("/shoal/9", "/shoal/10"),
            ours.replace("gc_grace_ms=", "gc_grace="),
            ours.replace("=3 ", "=-3 "),
            format!("{ours} extra=1"),
            ours.trim_end_matches(char::is_numeric).to_owned(),
        ] {
            assert_eq!(Announcement::parse(&theirs), None, "{theirs}");
        }
    }

    #[test]
    fn differences_name_each_setting_that_differs() {
        assert!(DEFAULTS.differences(&DEFAULTS).is_empty());
        let theirs = NetworkSettings { replication_factor: 2, gc_grace_ms: 60_000, ..DEFAULTS };
        assert_eq!(
            DEFAULTS.differences(&theirs),
            ["replication 3 here, 2 there", "gc_grace_ms 3600000 here, 60000 there"]
        );
    }

    #[test]
    fn combinations_that_break_the_deletion_rule_are_refused() {
        assert_eq!(DEFAULTS.validate(), Ok(()));
        for (settings, reason) in [
            (NetworkSettings { replication_factor: 0, ..DEFAULTS }, "replication factor"),
            (NetworkSettings { replication_factor: 17, ..DEFAULTS }, "replication factor"),
            (NetworkSettings { gc_grace_ms: 0, ..DEFAULTS }, "gc_grace must be positive"),
            (NetworkSettings { tombstone_lifetime_ms: 3_600_000, ..DEFAULTS }, "longer than gc_grace"),
            (
                NetworkSettings { failure_grace_ms: 700_000_000, tombstone_lifetime_ms: 700_000_000, ..DEFAULTS },
                "longer than failure_grace",
            ),
        ] {
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(reason), "{settings:?}: {error}");
        }
    }
}
