//! Named objects: name records, their hybrid logical clock versions, and the merge that
//! makes replicas agree.
//!
//! A name record lives on the R peers closest to its key ([`name_key`]). Every write of a
//! name (a bind or a delete) carries a version from a hybrid logical clock: wall-clock
//! milliseconds, a logical counter for events within one millisecond or behind a clock
//! that lags, and the writer's id to break exact ties. The newest version wins, so
//! replicas that saw the same writes agree on the same winner whatever the order they
//! arrived in. A replica that keeps a newer record than the one written says so, and the
//! coordinator moves its clock past it and writes again, so a later write from the same
//! client wins even through a peer whose clock is behind. A delete is a tombstone, a
//! record like any other, so it wins over the older binding on every replica it reaches,
//! and repair carries it to the others.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ItemKey, ItemKind, ObjectId, codec};

/// Longest name, in bytes of UTF-8.
pub const NAME_BYTES_MAX: usize = 1024;

/// Why a string is not a valid name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("name of {0} bytes is over the {NAME_BYTES_MAX}-byte limit")]
    TooLong(usize),
    #[error("names cannot contain control characters")]
    ControlCharacter,
    #[error("names cannot start with '/' or contain an empty segment ('//')")]
    EmptySegment,
    #[error("a name cannot be 64 hex characters: that is how ids are written")]
    LooksLikeAnId,
}

/// Checks a name: 1 to 1024 bytes of UTF-8, no control characters, `/`-separated
/// non-empty segments, and not spelled like an id.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    if name.starts_with('/') || name.contains("//") {
        return Err(NameError::EmptySegment);
    }
    if name.parse::<ObjectId>().is_ok() {
        return Err(NameError::LooksLikeAnId);
    }
    Ok(())
}

/// The key of a name's record. A pin, the record an unnamed object gets, is named by the
/// object's id (no user name can be spelled like one) and keyed by it, so it has the
/// object's holders and travels with its manifest. Any other name is keyed by BLAKE3 in
/// key derivation mode, which no object's id (BLAKE3 in plain mode) can equal.
pub fn name_key(name: &str) -> ItemKey {
    let id = match name.parse::<ObjectId>() {
        Ok(pinned) => pinned.0,
        Err(_) => blake3::derive_key("shoal 2026-11 name key", name.as_bytes()),
    };
    ItemKey { kind: ItemKind::Name, id }
}

/// A hybrid logical clock timestamp. Ordered by wall time, then counter, then writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub wall_ms: u64,
    pub logical: u32,
    /// The writing peer's tie-breaker, so two writes never share a version.
    pub writer: u64,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{:016x}", self.wall_ms, self.logical, self.writer)
    }
}

/// A peer's hybrid logical clock.
#[derive(Debug, Clone)]
pub struct HybridClock {
    writer: u64,
    last: Version,
}

impl HybridClock {
    pub fn new(writer: u64) -> Self {
        Self { writer, last: Version { writer, ..Version::default() } }
    }

    /// A version newer than every version this clock issued or observed. The counter
    /// saturates into the next millisecond rather than wrap, so versions only grow.
    pub fn tick(&mut self, wall_ms: u64) -> Version {
        let next = if wall_ms > self.last.wall_ms {
            Version { wall_ms, logical: 0, writer: self.writer }
        } else {
            match self.last.logical.checked_add(1) {
                Some(logical) => Version { wall_ms: self.last.wall_ms, logical, writer: self.writer },
                None if self.last.wall_ms < u64::MAX => {
                    Version { wall_ms: self.last.wall_ms + 1, logical: 0, writer: self.writer }
                }
                // The end of time (only a version that no peer accepts gets here): stay.
                None => Version { writer: self.writer, ..self.last },
            }
        };
        self.last = next;
        next
    }

    /// Moves the clock past a version seen elsewhere. Callers pass only versions that
    /// [`check_clock_offset`] accepted, so one peer's clock cannot drag this one far ahead.
    pub fn observe(&mut self, seen: Version) {
        if seen > self.last {
            self.last = Version { writer: self.writer, ..seen };
        }
    }
}

/// Farthest a version's wall time may be ahead of the local wall clock for a peer to
/// accept it, as CockroachDB's `max-offset`: a record from further ahead would win over
/// every write for as long as the lead lasts, and a tombstone from there would never
/// reach its lifetime. Peers whose clocks differ by more cannot write to each other.
pub const MAX_CLOCK_OFFSET_MS: u64 = 60_000;

/// A version ahead of the local clock by more than [`MAX_CLOCK_OFFSET_MS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {version} is {ahead_ms} ms ahead of this peer's clock (at most {MAX_CLOCK_OFFSET_MS} accepted)")]
pub struct ClockAhead {
    pub version: Version,
    pub ahead_ms: u64,
}

/// Accepts `version` if it is at most [`MAX_CLOCK_OFFSET_MS`] ahead of `now_ms`.
pub fn check_clock_offset(version: Version, now_ms: u64) -> Result<(), ClockAhead> {
    let ahead_ms = version.wall_ms.saturating_sub(now_ms);
    if ahead_ms > MAX_CLOCK_OFFSET_MS { Err(ClockAhead { version, ahead_ms }) } else { Ok(()) }
}

/// What a name points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Binding {
    Object {
        id: ObjectId,
        size: u64,
    },
    /// The name was deleted.
    Tombstone,
}

/// One version of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub name: String,
    pub version: Version,
    pub binding: Binding,
}

impl NameRecord {
    pub fn key(&self) -> ItemKey {
        name_key(&self.name)
    }

    pub fn is_tombstone(&self) -> bool {
        self.binding == Binding::Tombstone
    }

    /// Whether `self` wins over `other`: the newer version, and between equal versions
    /// (which one writer never issues twice) the larger encoding, so every replica picks
    /// the same.
    pub fn wins_over(&self, other: &NameRecord) -> bool {
        (self.version, codec::encode(self)) > (other.version, codec::encode(other))
    }
}

/// The winner of two copies of a name's record.
pub fn merge(a: NameRecord, b: NameRecord) -> NameRecord {
    if b.wins_over(&a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record(wall_ms: u64, logical: u32, writer: u64, tomb: bool) -> NameRecord {
        let binding = if tomb {
            Binding::Tombstone
        } else {
            Binding::Object { id: ObjectId::from(blake3::hash(&wall_ms.to_be_bytes())), size: wall_ms }
        };
        NameRecord { name: "photos/cat.jpg".into(), version: Version { wall_ms, logical, writer }, binding }
    }

    fn any_record() -> impl Strategy<Value = NameRecord> {
        (0u64..4, 0u32..3, 0u64..3, any::<bool>()).prop_map(|(w, l, n, t)| record(w, l, n, t))
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(a in any_record(), b in any_record(), c in any_record()) {
            prop_assert_eq!(merge(a.clone(), b.clone()), merge(b.clone(), a.clone()));
            prop_assert_eq!(
                merge(merge(a.clone(), b.clone()), c.clone()),
                merge(a.clone(), merge(b.clone(), c.clone()))
            );
            prop_assert_eq!(merge(a.clone(), a.clone()), a);
        }

        #[test]
        fn any_arrival_order_gives_the_same_winner(mut records in proptest::collection::vec(any_record(), 1..8), seed: u64) {
            let forward = records.iter().cloned().reduce(merge).unwrap();
            let len = records.len();
            records.rotate_left((seed as usize) % len);
            records.reverse();
            prop_assert_eq!(records.into_iter().reduce(merge).unwrap(), forward);
        }

        #[test]
        fn clock_versions_only_grow(walls in proptest::collection::vec(0u64..100, 1..50), seen in proptest::collection::vec(0u64..200, 0..10)) {
            let mut clock = HybridClock::new(7);
            let mut last = Version::default();
            for (i, wall) in walls.into_iter().enumerate() {
                if let Some(&s) = seen.get(i) {
                    clock.observe(Version { wall_ms: s, logical: 5, writer: 1 });
                }
                let next = clock.tick(wall);
                prop_assert!(next > last);
                last = next;
            }
        }
    }

    #[test]
    fn the_counter_saturates_into_the_next_millisecond() {
        let mut clock = HybridClock::new(1);
        clock.observe(Version { wall_ms: 10, logical: u32::MAX, writer: 2 });
        let next = clock.tick(5);
        assert_eq!((next.wall_ms, next.logical), (11, 0));
        clock.observe(Version { wall_ms: u64::MAX, logical: u32::MAX, writer: 2 });
        assert!(clock.tick(5) >= Version { wall_ms: u64::MAX, logical: u32::MAX, writer: 0 }, "never wraps");
    }

    #[test]
    fn versions_far_ahead_of_the_local_clock_are_refused() {
        let at = |wall_ms| Version { wall_ms, logical: 0, writer: 1 };
        assert_eq!(check_clock_offset(at(1_000 + MAX_CLOCK_OFFSET_MS), 1_000), Ok(()));
        assert!(check_clock_offset(at(1_001 + MAX_CLOCK_OFFSET_MS), 1_000).is_err());
        assert!(check_clock_offset(at(u64::MAX), 1_000).is_err());
        assert_eq!(check_clock_offset(at(0), 1_000), Ok(()), "behind is fine: it loses");
    }

    #[test]
    fn a_lagging_clock_still_writes_after_what_it_saw() {
        // A client writes through peer A, whose clock is an hour ahead, then through
        // peer B: B read A's version before writing, so B's write is newer.
        let mut a = HybridClock::new(1);
        let mut b = HybridClock::new(2);
        let first = a.tick(10_000_000);
        b.observe(first);
        let second = b.tick(6_400_000);
        assert!(second > first);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("photos/cat.jpg"), Ok(()));
        assert_eq!(validate_name("été/日本.txt"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(1025)), Err(NameError::TooLong(1025)));
        assert_eq!(validate_name("a\nb"), Err(NameError::ControlCharacter));
        assert_eq!(validate_name("/abs"), Err(NameError::EmptySegment));
        assert_eq!(validate_name("a//b"), Err(NameError::EmptySegment));
        assert_eq!(validate_name(&"ab".repeat(32)), Err(NameError::LooksLikeAnId));
        assert_ne!(name_key("a"), name_key("b"));
    }

    #[test]
    fn a_pin_is_keyed_by_its_object_and_a_name_by_no_plain_hash() {
        let id = ObjectId::from(blake3::hash(b"some object"));
        assert_eq!(name_key(&id.to_hex()).id, id.0);
        assert_ne!(&name_key("photos/cat.jpg").id, blake3::hash(b"photos/cat.jpg").as_bytes());
    }
}
