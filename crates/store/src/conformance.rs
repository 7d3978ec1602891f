//! One conformance suite, written once and run against every store (as Garage's
//! `src/db/test.rs`): each test is a generic fn over a [`Harness`], instantiated per store by
//! [`suite!`].

use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use shoal_core::{CHUNK_SIZE, ChunkRef, ItemKey, ItemKind, Manifest, codec};
use tempfile::TempDir;

use crate::{MemoryStore, RocksStore, Store, StoreError, StoreStats};

/// What the suite needs of a store beyond the trait.
trait Harness {
    type Store: Store;
    /// Whether data outlives a dropped store, so the next `open` finds it again.
    const PERSISTENT: bool;
    /// A store over this harness's data; call again once the previous one is dropped.
    fn open(&self) -> Self::Store;
    /// Writes `value` under `key` bypassing verification and stats, as a bad disk would.
    fn write_raw(store: &Self::Store, key: &ItemKey, value: &[u8]);
}

struct Rocks(TempDir);

impl Rocks {
    fn new() -> Self {
        Self(TempDir::new().expect("temporary directory"))
    }
}

impl Harness for Rocks {
    type Store = RocksStore;
    const PERSISTENT: bool = true;

    fn open(&self) -> RocksStore {
        RocksStore::open(self.0.path()).expect("open the RocksDB store")
    }

    fn write_raw(store: &RocksStore, key: &ItemKey, value: &[u8]) {
        store.write_raw(key, value).expect("raw test write");
    }
}

struct Memory;

impl Harness for Memory {
    type Store = MemoryStore;
    const PERSISTENT: bool = false;

    fn open(&self) -> MemoryStore {
        MemoryStore::new()
    }

    fn write_raw(store: &MemoryStore, key: &ItemKey, value: &[u8]) {
        store.write_raw(key, value);
    }
}

/// Instantiates every listed test for every store.
macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod rocks {
            $(#[test] fn $test() { super::$test(super::Rocks::new()) })*
        }
        mod memory {
            $(#[test] fn $test() { super::$test(super::Memory) })*
        }
    };
}

suite!(
    round_trip_both_kinds,
    shared_stores_delegate,
    invalid_item_refuses_whole_batch,
    stats_exact_through_duplicates_and_deletes,
    keys_are_listed_in_key_order,
    data_survives_reopen,
    corrupt_value_is_detected_on_read,
    concurrent_overlapping_writes_keep_exact_stats,
    empty_chunk_works,
    full_size_chunk_works,
    newer_name_records_win_and_older_ones_never_return,
    reference_sets_merge_and_survive_reopen,
    a_merge_past_the_reference_limit_is_refused_and_changes_nothing,
    bookkeeping_records_are_apart_from_items_and_survive_reopen,
);

type Item = (ItemKey, Bytes);

fn chunk(bytes: &[u8]) -> Item {
    (ItemKey::chunk(blake3::hash(bytes).into()), Bytes::copy_from_slice(bytes))
}

/// The manifest item of an object made of `bytes`.
fn manifest(bytes: &[u8]) -> Item {
    let chunks =
        bytes.chunks(CHUNK_SIZE).enumerate().map(|(index, chunk)| ChunkRef::compute(index as u64, chunk)).collect();
    let manifest = Manifest { size: bytes.len() as u64, chunks };
    (ItemKey::manifest(blake3::hash(bytes).into()), codec::encode(&manifest).into())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8).collect()
}

/// The exact stats of a store holding `items` (each key once).
fn stats_of(items: &[Item]) -> StoreStats {
    StoreStats { items: items.len() as u64, bytes: items.iter().map(|(_, value)| value.len() as u64).sum() }
}

fn assert_holds(store: &impl Store, items: &[Item]) {
    for (key, value) in items {
        assert_eq!(store.get(key).unwrap().as_ref(), Some(value), "{key:?}");
        assert!(store.contains(key).unwrap(), "{key:?}");
    }
}

fn assert_absent(store: &impl Store, items: &[Item]) {
    for (key, _) in items {
        assert_eq!(store.get(key).unwrap(), None, "{key:?}");
        assert!(!store.contains(key).unwrap(), "{key:?}");
    }
}

/// Put, get, contains and delete of small and multi-chunk manifests and of chunks.
fn exercise_round_trip(store: &impl Store) {
    let items = [
        chunk(b"hello shoal"),
        chunk(&pattern(10_000, 1)),
        manifest(b"hello shoal"),
        manifest(&pattern(3 * CHUNK_SIZE + 5, 2)),
    ];
    assert_absent(store, &items);
    store.put(&items).unwrap();
    assert_holds(store, &items);
    assert_eq!(store.stats(), stats_of(&items));
    for (key, _) in &items {
        assert!(store.delete(key).unwrap(), "{key:?}");
        assert!(!store.delete(key).unwrap(), "{key:?} deleted twice");
    }
    assert_absent(store, &items);
    assert_eq!(store.stats(), StoreStats::default());
}

fn round_trip_both_kinds<H: Harness>(harness: H) {
    exercise_round_trip(&harness.open());
}

/// `Arc<S>` and `Arc<dyn Store>` are stores too.
fn shared_stores_delegate<H: Harness>(harness: H) {
    exercise_round_trip(&Arc::new(harness.open()));
    let shared: Arc<dyn Store> = Arc::new(harness.open());
    exercise_round_trip(&shared);
}

fn invalid_item_refuses_whole_batch<H: Harness>(harness: H) {
    let store = harness.open();
    let before = [chunk(b"already here")];
    store.put(&before).unwrap();

    let good = [chunk(b"good one"), manifest(b"good one")];
    let wrong_chunk = (chunk(b"claimed").0, Bytes::from_static(b"delivered"));
    let wrong_manifest = (manifest(b"claimed").0, Bytes::from_static(b"not a manifest"));
    for bad in [wrong_chunk, wrong_manifest] {
        let batch = [good[0].clone(), bad.clone(), good[1].clone()];
        let err = store.put(&batch).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { key, .. } if key == bad.0), "{err:?}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert_absent(&store, &good);
        assert!(!store.contains(&bad.0).unwrap());
        assert_holds(&store, &before);
        assert_eq!(store.stats(), stats_of(&before));
    }
}

fn stats_exact_through_duplicates_and_deletes<H: Harness>(harness: H) {
    let store = harness.open();
    let [a, b, c, m] = [chunk(b"a"), chunk(&pattern(5000, 3)), chunk(&pattern(70, 4)), manifest(b"object")];
    store.put(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(store.stats(), stats_of(&[a.clone(), b.clone()]));
    store.put(std::slice::from_ref(&a)).unwrap();
    assert_eq!(store.stats(), stats_of(&[a.clone(), b.clone()]));
    // Duplicates within one batch count once too.
    store.put(&[b.clone(), c.clone(), c.clone(), m.clone(), m.clone()]).unwrap();
    let all = [a.clone(), b.clone(), c.clone(), m.clone()];
    assert_eq!(store.stats(), stats_of(&all));

    assert!(store.delete(&a.0).unwrap());
    assert_eq!(store.stats(), stats_of(&all[1..]));
    assert!(!store.delete(&a.0).unwrap());
    assert_eq!(store.stats(), stats_of(&all[1..]));
    store.put(&all).unwrap();
    assert_eq!(store.stats(), stats_of(&all));
    for (key, _) in &all {
        assert!(store.delete(key).unwrap());
    }
    assert_eq!(store.stats(), StoreStats::default());
}

fn keys_are_listed_in_key_order<H: Harness>(harness: H) {
    let store = harness.open();
    let chunks: Vec<Item> = (0..20).map(|i| chunk(&pattern(100 + i * 300, i as u8))).collect();
    let manifests: Vec<Item> = (0..5).map(|i| manifest(&pattern(i * 1000, 9))).collect();
    assert!(store.keys(ItemKind::Chunk).unwrap().is_empty());
    for batch in chunks.chunks(7).rev() {
        store.put(batch).unwrap();
    }
    store.put(&manifests).unwrap();

    let sorted_keys = |items: &[Item]| {
        let mut keys: Vec<ItemKey> = items.iter().map(|(key, _)| *key).collect();
        keys.sort();
        keys
    };
    assert_eq!(store.keys(ItemKind::Chunk).unwrap(), sorted_keys(&chunks));
    assert_eq!(store.keys(ItemKind::Manifest).unwrap(), sorted_keys(&manifests));

    store.delete(&chunks[3].0).unwrap();
    let mut remaining = chunks.clone();
    remaining.remove(3);
    assert_eq!(store.keys(ItemKind::Chunk).unwrap(), sorted_keys(&remaining));
}

fn data_survives_reopen<H: Harness>(harness: H) {
    if !H::PERSISTENT {
        return;
    }
    let items = [chunk(b"tail"), chunk(&pattern(CHUNK_SIZE, 5)), manifest(&pattern(99, 6))];
    let gone = chunk(b"deleted before close");
    {
        let store = harness.open();
        store.put(&items).unwrap();
        store.put(std::slice::from_ref(&gone)).unwrap();
        assert!(store.delete(&gone.0).unwrap());
    }
    let store = harness.open();
    assert_holds(&store, &items);
    assert_absent(&store, std::slice::from_ref(&gone));
    assert_eq!(store.stats(), stats_of(&items));
    assert_eq!(store.keys(ItemKind::Chunk).unwrap().len(), 2);
}

fn corrupt_value_is_detected_on_read<H: Harness>(harness: H) {
    let store = harness.open();
    // A small chunk, a chunk in a file (in RocksStore) and a manifest.
    let items = [chunk(b"small"), chunk(&pattern(64 << 10, 7)), manifest(&pattern(5000, 8))];
    store.put(&items).unwrap();
    for (key, value) in &items {
        let mut flipped = value.to_vec();
        flipped[value.len() / 2] ^= 0x01;
        H::write_raw(&store, key, &flipped);

        let err = store.get(key).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { key: k, .. } if k == *key), "{err:?}");
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(store.contains(key).unwrap());

        // Putting the right bytes again repairs the item.
        store.put(&[(*key, value.clone())]).unwrap();
        assert_eq!(store.get(key).unwrap().as_ref(), Some(value));
    }
    assert_eq!(store.stats(), stats_of(&items));
}

fn concurrent_overlapping_writes_keep_exact_stats<H: Harness>(harness: H) {
    const THREADS: usize = 4;
    let store = harness.open();
    let items: Vec<Item> = (0..48).map(|i| chunk(&pattern(50 + i * 97, i as u8))).collect();
    // Every thread writes every item, starting at a different place, in batches of 5.
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let (store, items) = (&store, &items);
            scope.spawn(move || {
                let mut mine = items.clone();
                mine.rotate_left(thread * 11);
                for batch in mine.chunks(5) {
                    store.put(batch).unwrap();
                }
            });
        }
    });
    assert_eq!(store.stats(), stats_of(&items));
    assert_holds(&store, &items);

    thread::scope(|scope| {
        for thread in 0..THREADS {
            let (store, items) = (&store, &items);
            scope.spawn(move || {
                for (key, _) in items.iter().cycle().skip(thread * 7).take(items.len()) {
                    store.delete(key).unwrap();
                }
            });
        }
    });
    assert_eq!(store.stats(), StoreStats::default());
}

fn empty_chunk_works<H: Harness>(harness: H) {
    let store = harness.open();
    let empty = [chunk(b""), manifest(b"")];
    assert_eq!(empty[0].0.id, *blake3::hash(b"").as_bytes());
    store.put(&empty).unwrap();
    assert_holds(&store, &empty);
    assert_eq!(store.stats(), stats_of(&empty));
    assert_eq!(store.stats().bytes, empty[1].1.len() as u64);
}

fn full_size_chunk_works<H: Harness>(harness: H) {
    let store = harness.open();
    let full = [chunk(&pattern(CHUNK_SIZE, 10))];
    store.put(&full).unwrap();
    assert_holds(&store, &full);
    assert_eq!(store.stats(), StoreStats { items: 1, bytes: CHUNK_SIZE as u64 });

    let oversized = [chunk(&pattern(CHUNK_SIZE + 1, 11))];
    let err = store.put(&oversized).unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    assert_absent(&store, &oversized);
}

fn name_record(version: u64, tombstone: bool) -> Item {
    use shoal_core::names::{Binding, NameRecord, Version};
    let binding = if tombstone {
        Binding::Tombstone
    } else {
        Binding::Object { id: blake3::hash(&version.to_be_bytes()).into(), size: version }
    };
    let record =
        NameRecord { name: "a/b".into(), version: Version { wall_ms: version, logical: 0, writer: 1 }, binding };
    (record.key(), codec::encode(&record).into())
}

fn newer_name_records_win_and_older_ones_never_return<H: Harness>(harness: H) {
    let store = harness.open();
    let (first, second, deleted) = (name_record(1, false), name_record(2, false), name_record(3, true));
    assert_eq!(store.put(std::slice::from_ref(&second)).unwrap(), []);
    let kept = store.put(std::slice::from_ref(&first)).unwrap();
    assert_eq!(kept, std::slice::from_ref(&second), "the newer copy that stayed is reported");
    assert_eq!(store.get(&second.0).unwrap(), Some(second.1.clone()), "an older version replaced a newer one");
    assert_eq!(store.put(std::slice::from_ref(&deleted)).unwrap(), []);
    assert_eq!(store.put(std::slice::from_ref(&deleted)).unwrap(), [], "an equal copy is not reported");
    store.put(&[first.clone(), second]).unwrap();
    assert_eq!(store.get(&first.0).unwrap(), Some(deleted.1), "a deleted name came back");
    assert_eq!(store.stats().items, 1);
}

fn reference_set(references: &shoal_core::references::References) -> Item {
    (ItemKey::references([7; 32]), codec::encode(references).into())
}

fn reference_sets_merge_and_survive_reopen<H: Harness>(harness: H) {
    use shoal_core::names::Version;
    use shoal_core::references::{References, Referrer, Upload};
    let lease = |writer| Referrer::Upload(Upload { id: Version { wall_ms: 1, logical: 0, writer }, until_ms: 9 });
    let (first, second) = (References::of(lease(1)), References::of(lease(2)));
    let mut both = first.clone();
    both.merge(&second);
    let mut first_dead = first.clone();
    first_dead.kill(&lease(1), 5);

    let mut expected = both.clone();
    expected.kill(&lease(1), 5);

    let store = harness.open();
    assert_eq!(store.put(&[reference_set(&first)]).unwrap(), []);
    assert_eq!(store.put(&[reference_set(&second)]).unwrap(), [reference_set(&both)], "the merge is reported");
    assert_eq!(store.put(&[reference_set(&first_dead)]).unwrap(), [reference_set(&expected)]);
    assert_eq!(store.put(&[reference_set(&first)]).unwrap(), [reference_set(&expected)], "a dead entry stays dead");
    assert_eq!(store.put(&[reference_set(&expected)]).unwrap(), [], "an equal copy is not reported");
    let store = if H::PERSISTENT {
        drop(store);
        harness.open()
    } else {
        store
    };
    assert_eq!(store.get(&reference_set(&expected).0).unwrap(), Some(reference_set(&expected).1));
    assert_eq!(store.stats().items, 1);

    let empty = reference_set(&References::default());
    assert!(matches!(store.put(&[empty]), Err(StoreError::Invalid { .. })), "an empty set is refused");
}

fn a_merge_past_the_reference_limit_is_refused_and_changes_nothing<H: Harness>(harness: H) {
    use shoal_core::names::Version;
    use shoal_core::references::{REFERENCES_MAX, References, Referrer, Upload};
    let lease = |writer| Referrer::Upload(Upload { id: Version { wall_ms: 1, logical: 0, writer }, until_ms: 9 });
    let mut full = References::default();
    for writer in 0..REFERENCES_MAX as u64 {
        full.merge(&References::of(lease(writer)));
    }
    let store = harness.open();
    store.put(&[reference_set(&full)]).unwrap();
    let one_more = reference_set(&References::of(lease(u64::MAX)));
    assert!(matches!(store.put(&[chunk(b"beside it"), one_more]), Err(StoreError::Invalid { .. })));
    assert_eq!(store.get(&reference_set(&full).0).unwrap(), Some(reference_set(&full).1), "the full set is kept");
    assert_eq!(store.get(&chunk(b"beside it").0).unwrap(), None, "the batch is refused whole");
    assert_eq!(store.stats().items, 1);
}

fn bookkeeping_records_are_apart_from_items_and_survive_reopen<H: Harness>(harness: H) {
    {
        let store = harness.open();
        assert_eq!(store.get_meta("scrub").unwrap(), None);
        store.put_meta("scrub", b"first").unwrap();
        store.put_meta("scrub", b"second").unwrap();
        store.put_meta("other", b"").unwrap();
        assert_eq!(store.get_meta("scrub").unwrap().as_deref(), Some(&b"second"[..]));
        assert_eq!(store.get_meta("other").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(store.stats(), StoreStats::default(), "a bookkeeping record is not an item");
        for kind in ItemKind::ALL {
            assert!(store.keys(kind).unwrap().is_empty());
        }
    }
    if H::PERSISTENT {
        assert_eq!(harness.open().get_meta("scrub").unwrap().as_deref(), Some(&b"second"[..]));
    }
}
