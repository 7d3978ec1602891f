//! Where an item lives: the one answer that put, get, repair and collection share.
//!
//! An item belongs on the R counted peers closest to its key, this one included: writes go
//! there and repair restores copies there. A peer that arrives takes keys over from the
//! peers it displaces, and until handoff has moved them the copies are where they were.
//! So for `move_window` after an arrival the holders from before it stay among the
//! item's replicas, as Garage keeps every layout version live until it is synced:
//! - a get asks them once the current holders lack the item, and answers 404 only when
//!   no holder of any set has it;
//! - a name read meets its level in every set of R holders, so it meets the quorum that
//!   acknowledged a write under the old ones;
//! - collection waits for an answer from every holder of every set and merges the
//!   reference sets they hold.
//!
//! The window bounds how long displaced holders are chased, it proves nothing: a handoff
//! that outlasts it can make reads miss until it completes. (Collection past the window
//! relies on handoff having pushed reference sets first, as before this policy.)

use shoal_core::digest::{Bucket, bucket_holders};
use shoal_core::placement::{KeyHash, closest};
use shoal_core::{Consistency, ItemKey, PeerKey};

/// Where every item belongs, as one node sees the network at one moment: the peers it
/// counts, each with its arrival. Put, get, repair, handoff and collection all ask one of
/// these, and a repair round keeps the one it started with, so every decision of the
/// round is made against the same peers.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Sorted by peer, each once.
    peers: Vec<(PeerKey, u64)>,
    view: Vec<PeerKey>,
    /// Peers that left (down past their grace period) and are still remembered.
    departed: Vec<PeerKey>,
    replication_factor: usize,
    /// Peers that arrived after this are recent.
    settled_ms: u64,
}

impl Layout {
    pub fn new(
        mut peers: Vec<(PeerKey, u64)>,
        departed: Vec<PeerKey>,
        replication_factor: usize,
        settled_ms: u64,
    ) -> Self {
        peers.sort();
        peers.dedup_by(|a, b| a.0 == b.0);
        let view = peers.iter().map(|(peer, _)| peer.clone()).collect();
        Self { peers, view, departed, replication_factor, settled_ms }
    }

    /// This layout and `found`, peers a lookup alone reached, each taken as arriving at
    /// `now_ms`: nothing says they hold what they should.
    pub fn with_found(self, found: impl IntoIterator<Item = PeerKey>, now_ms: u64) -> Self {
        let mut peers = self.peers;
        for peer in found {
            if !peers.iter().any(|(counted, _)| *counted == peer) {
                peers.push((peer, now_ms));
            }
        }
        Self::new(peers, self.departed, self.replication_factor, self.settled_ms)
    }

    /// The peers, sorted.
    pub fn peers(&self) -> &[PeerKey] {
        &self.view
    }

    pub fn replicas(&self, key: &ItemKey) -> Replicas {
        Replicas::of(&key.id, &self.peers, self.replication_factor, self.settled_ms)
    }

    /// Where `key` belongs now: `replicas(key).current()`, read off its bucket when one
    /// holder set serves the whole bucket, which spares rounds that visit every item a
    /// sort of the peers per item.
    pub fn holders(&self, key: &ItemKey) -> Vec<PeerKey> {
        self.bucket_holders(Bucket::of(key)).unwrap_or_else(|| self.key_holders(key))
    }

    /// The R peers that hold every key of `bucket`, when the same R peers do.
    pub fn bucket_holders(&self, bucket: Bucket) -> Option<Vec<PeerKey>> {
        bucket_holders(bucket, &self.view, self.replication_factor)
    }

    /// [`Layout::holders`] for a key whose bucket has no single holder set.
    pub fn key_holders(&self, key: &ItemKey) -> Vec<PeerKey> {
        closest(&key.id, &self.view, self.replication_factor)
    }

    /// A peer that left and would be among the R closest to `key` were it back: it may
    /// hold references to `key` that no counted peer has, so nothing may conclude `key`
    /// is unreferenced while it is away.
    pub fn departed_holder(&self, key: &ItemKey) -> Option<PeerKey> {
        if self.departed.is_empty() {
            return None;
        }
        let everyone: Vec<&PeerKey> = self.view.iter().chain(&self.departed).collect();
        closest(&key.id, everyone, self.replication_factor).into_iter().find(|peer| self.departed.contains(peer))
    }
}

/// The holders of one key: where it belongs now, then where it belonged before each
/// recent arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replicas {
    /// `sets[0]` is the current one; the others differ from it and from each other.
    sets: Vec<Vec<PeerKey>>,
    replication_factor: usize,
}

impl Replicas {
    /// The replicas of `key` among `peers`, each given with its arrival (see
    /// `Membership`). Peers that arrived after `settled_ms` are recent.
    pub fn of(key: &[u8], peers: &[(PeerKey, u64)], replication_factor: usize, settled_ms: u64) -> Self {
        let target = KeyHash::of(key);
        let mut by_distance: Vec<&(PeerKey, u64)> = peers.iter().collect();
        by_distance.sort_by_key(|(peer, _)| peer.distance_to(&target));
        by_distance.dedup_by(|a, b| a.0 == b.0);
        let holders_before = |arrival: Option<u64>| -> Vec<PeerKey> {
            let arrived = by_distance.iter().filter(|(_, arrived)| arrival.is_none_or(|arrival| *arrived < arrival));
            arrived.take(replication_factor).map(|(peer, _)| peer.clone()).collect()
        };
        let mut recent: Vec<u64> = peers.iter().map(|(_, arrived)| *arrived).filter(|a| *a > settled_ms).collect();
        recent.sort_unstable_by(|a, b| b.cmp(a));
        recent.dedup();
        let mut sets = vec![holders_before(None)];
        for arrival in recent {
            let before = holders_before(Some(arrival));
            if !before.is_empty() && !sets.contains(&before) {
                sets.push(before);
            }
        }
        Self { sets, replication_factor }
    }

    /// Where the item belongs now.
    pub fn current(&self) -> &[PeerKey] {
        &self.sets[0]
    }

    /// Every holder of every set, current ones first, each once.
    pub fn everyone(&self) -> Vec<PeerKey> {
        let mut everyone: Vec<PeerKey> = Vec::new();
        for peer in self.sets.iter().flatten() {
            if !everyone.contains(peer) {
                everyone.push(peer.clone());
            }
        }
        everyone
    }

    /// Whether the peers in `answered` meet `level` in every set a write at that level
    /// could have been acknowledged by: the current one, and every earlier one of R
    /// holders (a set of fewer is from a network still forming; a QUORUM write acked
    /// there is not chased, a known limit).
    pub fn met(&self, level: Consistency, answered: &[&PeerKey]) -> bool {
        let r = self.replication_factor;
        let earlier = self.sets[1..].iter().filter(|set| set.len() == r);
        std::iter::once(&self.sets[0]).chain(earlier).all(|set| {
            let count = set.iter().filter(|peer| answered.contains(peer)).count();
            count >= level.required(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn peers(count: usize) -> Vec<PeerKey> {
        (0..count).map(|n| PeerKey::from_bytes(format!("peer-{n}").as_bytes())).collect()
    }

    fn with_arrivals(peers: &[PeerKey], arrivals: &[u64]) -> Vec<(PeerKey, u64)> {
        peers.iter().cloned().zip(arrivals.iter().copied()).collect()
    }

    proptest! {
        #[test]
        fn a_settled_network_has_one_set_the_r_closest(key: [u8; 32], count in 1usize..20, r in 1usize..5) {
            let peers = peers(count);
            let replicas = Replicas::of(&key, &with_arrivals(&peers, &vec![10; count]), r, 10);
            prop_assert_eq!(replicas.current().to_vec(), closest(&key, &peers, r));
            prop_assert_eq!(replicas.everyone(), closest(&key, &peers, r));
        }

        /// Repair's holders and the foreground's current replicas are one answer.
        #[test]
        fn holders_are_the_current_replicas(id: [u8; 32], arrivals in prop::collection::vec(0u64..8, 1..40)) {
            let layout = Layout::new(with_arrivals(&peers(arrivals.len()), &arrivals), Vec::new(), 3, 4);
            let key = ItemKey { kind: shoal_core::ItemKind::Chunk, id };
            prop_assert_eq!(layout.holders(&key), layout.replicas(&key).current().to_vec());
        }

        /// Whatever order peers arrived in, the holders before any arrival are among the
        /// replicas: a read finds what any of them acknowledged.
        #[test]
        fn every_earlier_holder_set_is_kept(key: [u8; 32], arrivals in prop::collection::vec(0u64..8, 1..12)) {
            let peers = peers(arrivals.len());
            let replicas = Replicas::of(&key, &with_arrivals(&peers, &arrivals), 3, 0);
            let everyone = replicas.everyone();
            for until in 0..8 {
                let present: Vec<&PeerKey> =
                    peers.iter().zip(&arrivals).filter(|(_, arrived)| **arrived <= until).map(|(p, _)| p).collect();
                for holder in closest(&key, present, 3) {
                    prop_assert!(everyone.contains(&holder));
                }
            }
        }
    }

    #[test]
    fn a_quorum_read_meets_the_quorum_of_the_holders_before_an_arrival() {
        let key = [7u8; 32];
        let all = peers(4);
        let newcomer = closest(&key, &all, 1)[0].clone();
        let arrivals: Vec<u64> = all.iter().map(|peer| if *peer == newcomer { 100 } else { 1 }).collect();
        let replicas = Replicas::of(&key, &with_arrivals(&all, &arrivals), 3, 50);
        let old: Vec<PeerKey> = all.iter().filter(|peer| **peer != newcomer).cloned().collect();
        assert_eq!(replicas.sets, vec![closest(&key, &all, 3), closest(&key, &old, 3)]);

        // The newcomer and the one old holder still current are a quorum of the current
        // set, not of the old one: the write acked by the two old holders gone from the
        // current set may be missed.
        let displaced = old.iter().find(|peer| !replicas.current().contains(peer)).unwrap();
        let kept = old.iter().find(|peer| replicas.current().contains(peer) && *peer != displaced).unwrap();
        assert!(!replicas.met(Consistency::Quorum, &[&newcomer, kept]));
        assert!(replicas.met(Consistency::Quorum, &[&newcomer, kept, displaced]));
        assert!(replicas.met(Consistency::One, &[kept]));
        assert_eq!(Replicas::of(&key, &with_arrivals(&all, &arrivals), 3, 100).sets.len(), 1, "settled");
    }
}
