//! The in-memory index of the items this peer holds: keys (with their content tags) by
//! bucket, and each bucket's fingerprint, updated one item at a time as items are written
//! and removed.

use std::collections::BTreeMap;

use shoal_core::ItemKey;
use shoal_core::digest::{BUCKETS, Bucket, ContentTag, Fingerprint};

#[derive(Debug)]
pub(crate) struct KeyIndex {
    keys: Vec<BTreeMap<ItemKey, ContentTag>>,
    fingerprints: Vec<Fingerprint>,
}

impl KeyIndex {
    pub fn new(keys: impl IntoIterator<Item = (ItemKey, ContentTag)>) -> Self {
        let mut index =
            Self { keys: vec![BTreeMap::new(); BUCKETS], fingerprints: vec![Fingerprint::default(); BUCKETS] };
        for (key, tag) in keys {
            index.insert(key, tag);
        }
        index
    }

    /// Records that `key` is held with content `tag`; false if exactly that was known.
    pub fn insert(&mut self, key: ItemKey, tag: ContentTag) -> bool {
        let bucket = Bucket::of(&key).index();
        match self.keys[bucket].insert(key, tag) {
            Some(old) if old == tag => return false,
            Some(old) => self.fingerprints[bucket].toggle(&Fingerprint::of(&key, &old)),
            None => {}
        }
        self.fingerprints[bucket].toggle(&Fingerprint::of(&key, &tag));
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &ItemKey) -> bool {
        let bucket = Bucket::of(key).index();
        let Some(tag) = self.keys[bucket].remove(key) else { return false };
        self.fingerprints[bucket].toggle(&Fingerprint::of(key, &tag));
        true
    }

    /// The content tag `key` is held with, if held.
    pub fn tag(&self, key: &ItemKey) -> Option<ContentTag> {
        self.keys[Bucket::of(key).index()].get(key).copied()
    }

    pub fn contains(&self, key: &ItemKey) -> bool {
        self.keys[Bucket::of(key).index()].contains_key(key)
    }

    pub fn bucket(&self, bucket: Bucket) -> &BTreeMap<ItemKey, ContentTag> {
        &self.keys[bucket.index()]
    }

    pub fn fingerprint(&self, bucket: Bucket) -> Fingerprint {
        self.fingerprints[bucket.index()]
    }

    /// Non-empty buckets, in bucket order.
    pub fn occupied(&self) -> impl Iterator<Item = (Bucket, &BTreeMap<ItemKey, ContentTag>)> {
        self.keys.iter().enumerate().filter(|(_, keys)| !keys.is_empty()).map(|(i, keys)| (Bucket(i as u16), keys))
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::ItemKind;

    use super::*;

    #[test]
    fn fingerprints_follow_inserts_removes_and_new_versions() {
        let key = |n: u8| ItemKey { kind: ItemKind::Chunk, id: [n; 32] };
        let tagged = |n: u8| (key(n), ContentTag::default());
        let mut a = KeyIndex::new((0..50).map(tagged));
        let b = KeyIndex::new((0..50).rev().map(tagged));
        let differing = |a: &KeyIndex, b: &KeyIndex| {
            (0..BUCKETS).filter(|&i| a.fingerprints[i] != b.fingerprints[i]).collect::<Vec<_>>()
        };
        assert!(differing(&a, &b).is_empty());
        assert!(a.remove(&key(7)));
        assert!(!a.remove(&key(7)));
        assert_eq!(differing(&a, &b), vec![Bucket::of(&key(7)).index()]);
        assert!(a.insert(key(7), ContentTag::default()));
        assert!(!a.insert(key(7), ContentTag::default()));
        assert!(differing(&a, &b).is_empty());
        // Another version under the same key changes the fingerprint; the old one restores it.
        assert!(a.insert(key(7), [1; 16]));
        assert_eq!(differing(&a, &b).len(), 1);
        assert!(a.insert(key(7), ContentTag::default()));
        assert!(differing(&a, &b).is_empty());
        assert_eq!(a.occupied().map(|(_, keys)| keys.len()).sum::<usize>(), 50);
    }
}
