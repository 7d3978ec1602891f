//! References: the durable, replicated reasons a chunk or manifest is kept.
//!
//! Every chunk and manifest has, on its own holders, a [`References`] set (an item of kind
//! [`ItemKind::References`](crate::ItemKind) under the same id), in the manner of Garage's
//! block references. An entry names one [`Referrer`] and whether it is still live. Entries
//! are only ever added or killed, never revived, so sets merge as a CRDT (union, a dead
//! entry wins over a live one) and anti-entropy repairs them like any other item.
//!
//! A referrer is either an upload in progress (a lease that keeps what a put wrote until
//! its deadline) or one version of a name record (a user's name or a pin) that binds the
//! object. A put picks that version before it writes anything that refers to it, so the
//! evidence that a binding reference may go is positive and final: a record of the same
//! name with a newer version exists. Newest wins, so the referring version can never be
//! the name's record again. Nothing else kills an entry: a record that cannot be read, a
//! holder that does not answer or a name with no record at all keep it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::names::Version;

/// Most entries one reference set may hold: about 4 MiB encoded, under the frame limit.
pub const REFERENCES_MAX: usize = 65_536;

/// A put in progress, identified by a version of its coordinator's clock. It keeps the
/// chunks it wrote until `until_ms` (wall clock), by which time the put has written its
/// binding references or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Upload {
    pub id: Version,
    pub until_ms: u64,
}

/// Why an item is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Referrer {
    /// An upload lease.
    Upload(Upload),
    /// The record of the name keyed `name` (the id of its [`ItemKey`](crate::ItemKey)) at
    /// `version`, which binds the object.
    Binding { name: Hash32, version: Version },
}

/// Whether a referrer still keeps the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefState {
    Live,
    /// Positive evidence that it no longer does was found at `since_ms` (wall clock).
    Dead {
        since_ms: u64,
    },
}

/// The references of one id's chunk and manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct References {
    entries: BTreeMap<Referrer, RefState>,
}

impl References {
    /// A set holding one live entry.
    pub fn of(referrer: Referrer) -> Self {
        Self { entries: BTreeMap::from([(referrer, RefState::Live)]) }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, referrer: &Referrer) -> bool {
        self.entries.contains_key(referrer)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Referrer, &RefState)> {
        self.entries.iter()
    }

    /// Adds `other`'s entries: a dead entry wins over a live one, the earlier death over a
    /// later one. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &References) {
        for (referrer, theirs) in &other.entries {
            let merged = match (self.entries.get(referrer), theirs) {
                (None, state) | (Some(RefState::Live), state) => *state,
                (Some(mine @ RefState::Dead { .. }), RefState::Live) => *mine,
                (Some(RefState::Dead { since_ms: a }), RefState::Dead { since_ms: b }) => {
                    RefState::Dead { since_ms: (*a).min(*b) }
                }
            };
            self.entries.insert(*referrer, merged);
        }
    }

    /// Records evidence, found at `now_ms`, that `referrer` no longer keeps the item.
    /// Returns whether the entry was live.
    pub fn kill(&mut self, referrer: &Referrer, now_ms: u64) -> bool {
        match self.entries.get_mut(referrer) {
            Some(state @ RefState::Live) => {
                *state = RefState::Dead { since_ms: now_ms };
                true
            }
            _ => false,
        }
    }

    /// Kills every upload lease whose deadline has passed at `now_ms`; true if any was live.
    pub fn expire_uploads(&mut self, now_ms: u64) -> bool {
        let expired: Vec<Referrer> = self
            .live()
            .filter(|referrer| matches!(referrer, Referrer::Upload(upload) if upload.until_ms < now_ms))
            .collect();
        expired.iter().fold(false, |any, referrer| self.kill(referrer, now_ms) | any)
    }

    /// The referrers that still keep the item.
    pub fn live(&self) -> impl Iterator<Item = Referrer> + '_ {
        self.entries.iter().filter(|(_, state)| **state == RefState::Live).map(|(referrer, _)| *referrer)
    }

    /// Whether every referrer the item ever had is dead, the last of them for at least
    /// `delay_ms` at `now_ms`. A set with no entry says nothing, so it never qualifies.
    pub fn dead_for(&self, delay_ms: u64, now_ms: u64) -> bool {
        !self.entries.is_empty()
            && self.entries.values().all(|state| match state {
                RefState::Live => false,
                RefState::Dead { since_ms } => since_ms.saturating_add(delay_ms) <= now_ms,
            })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn binding(writer: u64) -> Referrer {
        Referrer::Binding { name: [1; 32], version: Version { wall_ms: 5, logical: 0, writer } }
    }

    fn any_set() -> impl Strategy<Value = References> {
        proptest::collection::vec((0u64..4, proptest::option::of(0u64..3)), 0..5).prop_map(|entries| References {
            entries: entries
                .into_iter()
                .map(|(writer, dead)| {
                    (binding(writer), dead.map_or(RefState::Live, |since_ms| RefState::Dead { since_ms }))
                })
                .collect(),
        })
    }

    fn merged(mut a: References, b: &References) -> References {
        a.merge(b);
        a
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_idempotent(a in any_set(), b in any_set(), c in any_set()) {
            prop_assert_eq!(merged(a.clone(), &b), merged(b.clone(), &a));
            prop_assert_eq!(merged(merged(a.clone(), &b), &c), merged(a.clone(), &merged(b.clone(), &c)));
            prop_assert_eq!(merged(a.clone(), &a), a);
        }
    }

    #[test]
    fn a_dead_entry_is_never_revived() {
        let mut set = References::of(binding(1));
        let stale = set.clone();
        assert!(set.kill(&binding(1), 10));
        set.merge(&stale);
        assert_eq!(set.live().count(), 0);
        assert!(!set.kill(&binding(1), 20), "already dead");
        assert!(set.dead_for(5, 15) && !set.dead_for(5, 14));
    }

    #[test]
    fn only_a_set_whose_every_entry_is_dead_qualifies() {
        assert!(!References::default().dead_for(0, u64::MAX), "an empty set says nothing");
        let mut set = References::of(binding(1));
        set.merge(&References::of(binding(2)));
        set.kill(&binding(1), 0);
        assert!(!set.dead_for(0, 100));
        set.kill(&binding(2), 50);
        assert!(set.dead_for(50, 100) && !set.dead_for(51, 100));
    }

    #[test]
    fn leases_expire_after_their_deadline_only() {
        let lease = Referrer::Upload(Upload { id: Version::default(), until_ms: 100 });
        let mut set = References::of(lease);
        assert!(!set.expire_uploads(100));
        assert!(set.expire_uploads(101));
        assert_eq!(set.entries().next(), Some((&lease, &RefState::Dead { since_ms: 101 })));
    }
}
