//! The in-memory index of the items this peer holds: keys (with their content tags) by
//! bucket, each bucket's fingerprint, and the names of the name records in name order,
//! updated one item at a time as items are written and removed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use shoal_core::digest::{BUCKETS, Bucket, ContentTag, Fingerprint, content_tag};
use shoal_core::names::NameRecord;
use shoal_core::{ItemKey, ItemKind, ObjectId, codec};

/// What the index keeps of one held item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: ItemKey,
    pub tag: ContentTag,
    /// For a name record other than a pin, its name: listings walk these in order.
    pub name: Option<String>,
}

impl Entry {
    /// The entry of `key` held with the verified `value`.
    pub fn of(key: ItemKey, value: &[u8]) -> Self {
        let name = (key.kind == ItemKind::Name)
            .then(|| codec::decode::<NameRecord>(value).expect("verified by the store").name)
            .filter(|name| name.parse::<ObjectId>().is_err());
        Self { key, tag: content_tag(&key, value), name }
    }

    /// The entry of an item whose content never changes under its key (a chunk, a manifest).
    pub fn immutable(key: ItemKey) -> Self {
        Self { key, tag: ContentTag::default(), name: None }
    }
}

#[derive(Debug)]
pub(crate) struct KeyIndex {
    keys: Vec<BTreeMap<ItemKey, ContentTag>>,
    fingerprints: Vec<Fingerprint>,
    names: BTreeMap<String, ItemKey>,
    name_of: HashMap<ItemKey, String>,
}

impl KeyIndex {
    pub fn new(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut index = Self {
            keys: vec![BTreeMap::new(); BUCKETS],
            fingerprints: vec![Fingerprint::default(); BUCKETS],
            names: BTreeMap::new(),
            name_of: HashMap::new(),
        };
        for entry in entries {
            index.insert(entry);
        }
        index
    }

    /// Records that `entry.key` is held with content `entry.tag`; false if exactly that
    /// was known.
    pub fn insert(&mut self, Entry { key, tag, name }: Entry) -> bool {
        if let Some(name) = name {
            self.names.insert(name.clone(), key);
            self.name_of.insert(key, name);
        }
        let bucket = Bucket::of(&key).index();
        match self.keys[bucket].insert(key, tag) {
            Some(old) if old == tag => return false,
            Some(old) => self.fingerprints[bucket].toggle(&Fingerprint::of(&key, &old)),
            None => {}
        }
        self.fingerprints[bucket].toggle(&Fingerprint::of(&key, &tag));
        true
    }

    /// Up to `limit` held keys after `after`, in bucket order and in key order within a
    /// bucket: the order scrub walks in.
    pub fn keys_after(&self, after: Option<&ItemKey>, limit: usize) -> Vec<ItemKey> {
        let first = after.map_or(0, |key| Bucket::of(key).index());
        let mut keys = Vec::with_capacity(limit);
        for (bucket, held) in self.keys.iter().enumerate().skip(first) {
            let from = match after {
                Some(after) if bucket == first => Bound::Excluded(*after),
                _ => Bound::Unbounded,
            };
            keys.extend(held.range((from, Bound::Unbounded)).map(|(key, _)| *key).take(limit - keys.len()));
            if keys.len() == limit {
                break;
            }
        }
        keys
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &ItemKey) -> bool {
        if let Some(name) = self.name_of.remove(key) {
            self.names.remove(&name);
        }
        let bucket = Bucket::of(key).index();
        let Some(tag) = self.keys[bucket].remove(key) else { return false };
        self.fingerprints[bucket].toggle(&Fingerprint::of(key, &tag));
        true
    }

    /// The name records held whose names start with `prefix` and come after `after`, in
    /// name order.
    pub fn names<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, ItemKey)> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.names
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(name, _)| name.starts_with(prefix))
            .map(|(name, key)| (name.as_str(), *key))
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
        let tagged = |n: u8| Entry::immutable(key(n));
        let mut a = KeyIndex::new((0..50).map(tagged));
        let b = KeyIndex::new((0..50).rev().map(tagged));
        let differing = |a: &KeyIndex, b: &KeyIndex| {
            (0..BUCKETS).filter(|&i| a.fingerprints[i] != b.fingerprints[i]).collect::<Vec<_>>()
        };
        assert!(differing(&a, &b).is_empty());
        assert!(a.remove(&key(7)));
        assert!(!a.remove(&key(7)));
        assert_eq!(differing(&a, &b), vec![Bucket::of(&key(7)).index()]);
        assert!(a.insert(Entry::immutable(key(7))));
        assert!(!a.insert(Entry::immutable(key(7))));
        assert!(differing(&a, &b).is_empty());
        // Another version under the same key changes the fingerprint; the old one restores it.
        assert!(a.insert(Entry { tag: [1; 16], ..Entry::immutable(key(7)) }));
        assert_eq!(differing(&a, &b).len(), 1);
        assert!(a.insert(Entry::immutable(key(7))));
        assert!(differing(&a, &b).is_empty());
        assert_eq!(a.occupied().map(|(_, keys)| keys.len()).sum::<usize>(), 50);
    }

    #[test]
    fn names_are_walked_in_order_from_a_cursor_and_pins_are_not_names() {
        use shoal_core::names::{Binding, Version, name_key};
        let entry = |name: &str| {
            let record = NameRecord { name: name.to_owned(), version: Version::default(), binding: Binding::Tombstone };
            Entry::of(name_key(name), &codec::encode(&record))
        };
        let pin = ObjectId([7; 32]).to_hex();
        let mut index = KeyIndex::new(["b/2", "a", "b/1", "c", "b/3", pin.as_str()].map(entry));
        let names =
            |index: &KeyIndex, prefix, after| index.names(prefix, after).map(|(_, key)| key).collect::<Vec<_>>();
        let keys = |names: &[&str]| names.iter().map(|n| name_key(n)).collect::<Vec<_>>();
        assert_eq!(names(&index, "", None), keys(&["a", "b/1", "b/2", "b/3", "c"]));
        assert_eq!(names(&index, "b/", None), keys(&["b/1", "b/2", "b/3"]));
        assert_eq!(names(&index, "b/", Some("b/1")), keys(&["b/2", "b/3"]));
        assert_eq!(names(&index, "b/", Some("a")), keys(&["b/1", "b/2", "b/3"]));
        assert_eq!(names(&index, "b/", Some("b/3")), keys(&[]));
        assert!(index.remove(&name_key("b/2")));
        assert_eq!(names(&index, "b/", None), keys(&["b/1", "b/3"]));
    }
}
