//! The in-memory index of the items this peer holds: keys by bucket, and each bucket's
//! fingerprint, updated one item at a time as items are written and removed.

use std::collections::BTreeSet;

use shoal_core::ItemKey;
use shoal_core::digest::{BUCKETS, Bucket, Fingerprint};

#[derive(Debug)]
pub(crate) struct KeyIndex {
    keys: Vec<BTreeSet<ItemKey>>,
    fingerprints: Vec<Fingerprint>,
}

impl KeyIndex {
    pub fn new(keys: impl IntoIterator<Item = ItemKey>) -> Self {
        let mut index =
            Self { keys: vec![BTreeSet::new(); BUCKETS], fingerprints: vec![Fingerprint::default(); BUCKETS] };
        for key in keys {
            index.insert(key);
        }
        index
    }

    /// Adds `key`; false if it was there already.
    pub fn insert(&mut self, key: ItemKey) -> bool {
        let bucket = Bucket::of(&key).index();
        let added = self.keys[bucket].insert(key);
        if added {
            self.fingerprints[bucket].toggle(&Fingerprint::of(&key));
        }
        added
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &ItemKey) -> bool {
        let bucket = Bucket::of(key).index();
        let removed = self.keys[bucket].remove(key);
        if removed {
            self.fingerprints[bucket].toggle(&Fingerprint::of(key));
        }
        removed
    }

    pub fn contains(&self, key: &ItemKey) -> bool {
        self.keys[Bucket::of(key).index()].contains(key)
    }

    pub fn bucket(&self, bucket: Bucket) -> &BTreeSet<ItemKey> {
        &self.keys[bucket.index()]
    }

    pub fn fingerprint(&self, bucket: Bucket) -> Fingerprint {
        self.fingerprints[bucket.index()]
    }

    /// Non-empty buckets, in bucket order.
    pub fn occupied(&self) -> impl Iterator<Item = (Bucket, &BTreeSet<ItemKey>)> {
        self.keys.iter().enumerate().filter(|(_, keys)| !keys.is_empty()).map(|(i, keys)| (Bucket(i as u16), keys))
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::ItemKind;

    use super::*;

    #[test]
    fn fingerprints_follow_inserts_and_removes() {
        let key = |n: u8| ItemKey { kind: ItemKind::Chunk, id: [n; 32] };
        let mut a = KeyIndex::new((0..50).map(key));
        let b = KeyIndex::new((0..50).rev().map(key));
        let differing = |a: &KeyIndex, b: &KeyIndex| {
            (0..BUCKETS).filter(|&i| a.fingerprints[i] != b.fingerprints[i]).collect::<Vec<_>>()
        };
        assert!(differing(&a, &b).is_empty());
        assert!(a.remove(&key(7)));
        assert!(!a.remove(&key(7)));
        assert_eq!(differing(&a, &b), vec![Bucket::of(&key(7)).index()]);
        assert!(a.insert(key(7)));
        assert!(!a.insert(key(7)));
        assert!(differing(&a, &b).is_empty());
        assert_eq!(a.occupied().map(|(_, keys)| keys.len()).sum::<usize>(), 50);
    }
}
