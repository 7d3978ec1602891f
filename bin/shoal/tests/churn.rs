//! Self-healing with real processes: peers die, return and join on a 10-peer testnet, and
//! every item ends on exactly its R closest live peers with nothing lost or left over.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const REPAIR_LIMIT: Duration = Duration::from_secs(90);

/// Puts 50 objects of 1 byte to 8 MiB at ALL, through different peers.
fn stock(testnet: &Testnet, peers: usize, dir: &std::path::Path) -> Vec<(String, PathBuf)> {
    let sizes = [1, 1023, 4096, 65_536, 1 << 20, (1 << 20) + 1, 3 << 20, 8 << 20];
    (0..50)
        .map(|i| {
            let (file, _) = pseudo_random_file(dir, sizes[i % sizes.len()], &format!("object-{i}"));
            let id = stdout(&testnet.shoal(1 + i % peers, &["put", file.to_str().unwrap(), "--consistency", "all"]));
            (id, file)
        })
        .collect()
}

fn all_items(testnet: &Testnet, live: &[usize]) -> BTreeSet<(String, String)> {
    live.iter().flat_map(|&peer| testnet.items_with_kind(peer)).collect()
}

fn assert_all_read_back(testnet: &Testnet, via: usize, objects: &[(String, PathBuf)], dir: &std::path::Path) {
    for (id, file) in objects {
        let copy = dir.join("copy");
        stdout(&testnet.shoal(via, &["get", id, "-o", copy.to_str().unwrap()]));
        assert!(std::fs::read(&copy).unwrap() == std::fs::read(file).unwrap(), "{id} came back different");
    }
}

#[test]
fn ten_peers_survive_deaths_returns_and_joins() {
    let testnet = Testnet::up(10);
    let work = tempfile::tempdir().unwrap();
    let objects = stock(&testnet, 10, work.path());
    let mut live: Vec<usize> = (1..=10).collect();
    let items = all_items(&testnet, &live);
    testnet.wait_for_exact_placement(&live, &items, REPAIR_LIMIT);

    // R-1 = 2 peers die at once: everything still reads back, and repair restores R.
    for peer in [3, 7] {
        testnet.run("kill", &[&peer.to_string()]);
        live.retain(|&p| p != peer);
    }
    assert_all_read_back(&testnet, live[0], &objects, work.path());
    testnet.wait_for_exact_placement(&live, &items, REPAIR_LIMIT);

    // Then one at a time, with repair in between, down to R peers.
    for peer in [1, 9, 5, 10, 2] {
        testnet.run("kill", &[&peer.to_string()]);
        live.retain(|&p| p != peer);
        testnet.wait_for_exact_placement(&live, &items, REPAIR_LIMIT);
    }
    assert_eq!(live.len(), 3);
    assert_all_read_back(&testnet, live[0], &objects, work.path());

    // The dead come back with their old data, and two new peers join.
    for peer in [3, 7, 1, 9, 5, 10, 2] {
        testnet.run("start", &[&peer.to_string()]);
    }
    testnet.run("add", &["2"]);
    let live: Vec<usize> = (1..=12).collect();
    testnet.wait_for_exact_placement(&live, &items, REPAIR_LIMIT);
    assert_all_read_back(&testnet, 12, &objects, work.path());
}

#[test]
fn a_corrupt_copy_is_never_served_and_is_repaired_from_a_replica() {
    let testnet = Testnet::up(4);
    let work = tempfile::tempdir().unwrap();
    let (file, bytes) = pseudo_random_file(work.path(), (2 << 20) + 3, "to-corrupt");
    let id = stdout(&testnet.shoal(1, &["put", file.to_str().unwrap(), "--consistency", "all"]));

    // Damage every chunk copy on one peer that holds chunks of the object.
    let (peer, chunks) = (1..=4)
        .map(|p| (p, testnet.items_with_kind(p).into_iter().filter(|(kind, _)| kind == "chunk").collect::<Vec<_>>()))
        .max_by_key(|(_, chunks)| chunks.len())
        .unwrap();
    for (_, chunk) in &chunks {
        let request =
            format!("POST /v1/debug/corrupt/chunk/{chunk} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let answer = http(&testnet.api(peer), &request);
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    }

    // A get through that peer returns the right bytes: its bad copies are skipped...
    let copy = work.path().join("copy");
    stdout(&testnet.shoal(peer, &["get", &id, "-o", copy.to_str().unwrap()]));
    assert!(std::fs::read(&copy).unwrap() == bytes);

    // ...and replaced: the peer counts them found and repaired, and serves them again.
    let deadline = std::time::Instant::now() + REPAIR_LIMIT;
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&stdout(&testnet.shoal(peer, &["status", "--json"]))).unwrap();
        let repaired = status["repair"]["corrupt_repaired"].as_u64().unwrap();
        if repaired >= chunks.len() as u64 {
            assert!(status["repair"]["corrupt_found"].as_u64().unwrap() >= chunks.len() as u64);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "corrupt copies not repaired: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let held: BTreeSet<_> = testnet.items_with_kind(peer).into_iter().collect();
    assert!(chunks.iter().all(|chunk| held.contains(chunk)));
}

#[test]
fn deleting_a_name_reclaims_its_space_on_every_replica_but_not_shared_chunks() {
    let testnet = Testnet::up(4);
    let work = tempfile::tempdir().unwrap();
    let (a_file, a) = pseudo_random_file(work.path(), 3 << 20, "a");
    let mut b = a[..2 << 20].to_vec();
    b.extend(std::iter::repeat_n(7u8, 1 << 20));
    let b_file = work.path().join("b");
    std::fs::write(&b_file, &b).unwrap();
    let a_id =
        stdout(&testnet.shoal(1, &["put", a_file.to_str().unwrap(), "--name", "docs/a", "--consistency", "all"]));
    let b_id =
        stdout(&testnet.shoal(2, &["put", b_file.to_str().unwrap(), "--name", "docs/b", "--consistency", "all"]));
    stdout(&testnet.shoal(3, &["rm", "docs/a", "--consistency", "all"]));

    let a_only = blake3::hash(&a[2 << 20..]).to_hex().to_string();
    let shared = blake3::hash(&a[..1 << 20]).to_hex().to_string();
    // Their reference sets stay, all dead, until the tombstone lifetime: only chunks and
    // manifests are space to reclaim.
    let holding = |kind: &str, id: &str| {
        (1..=4).filter(|&p| testnet.items_with_kind(p).iter().any(|(k, i)| k == kind && i == id)).count()
    };
    let deadline = std::time::Instant::now() + REPAIR_LIMIT;
    while holding("chunk", &a_only) > 0 || holding("manifest", &a_id) > 0 {
        assert!(std::time::Instant::now() < deadline, "a's chunk or manifest was never reclaimed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(holding("chunk", &shared), 3, "a chunk that b shares went with a");
    assert_eq!(holding("manifest", &b_id), 3);
    let copy = work.path().join("copy");
    stdout(&testnet.shoal(4, &["get", "docs/b", "-o", copy.to_str().unwrap()]));
    assert!(std::fs::read(&copy).unwrap() == b);
    assert!(one_line_error(&testnet.shoal(4, &["get", "docs/a"])).contains("not found"));
    assert_eq!(stdout(&testnet.shoal(1, &["ls", "docs/"])).lines().count(), 1);
}

/// Issue 11, defect 1, through real processes: the holders of an object's name are down
/// for ten collection grace periods (10 s each in the testnet) while the others keep
/// collecting. Under mark and sweep nothing marked the object's manifest and chunks
/// meanwhile, so the others swept every chunk they alone held; now the object reads back
/// whole from every peer once the name's holders return, and every item is back on
/// exactly its R closest peers.
#[test]
fn an_object_outlives_its_name_holders_down_for_ten_grace_periods() {
    const GC_GRACE: Duration = Duration::from_secs(10);
    const PEERS: usize = 10;
    let testnet = Testnet::up(PEERS);
    let work = tempfile::tempdir().unwrap();
    let all: Vec<usize> = (1..=PEERS).collect();
    let holders = |kind: &str, id: &str| -> Vec<usize> {
        all.iter().copied().filter(|&p| testnet.items_with_kind(p).iter().any(|(k, i)| k == kind && i == id)).collect()
    };

    // Collection is at work on this testnet: a deleted object's manifest goes.
    let (decoy, _) = pseudo_random_file(work.path(), 2 << 20, "decoy");
    let decoy_id = stdout(&testnet.shoal(1, &["put", decoy.to_str().unwrap(), "--name", "decoy"]));
    stdout(&testnet.shoal(2, &["rm", "decoy"]));
    let deadline = std::time::Instant::now() + REPAIR_LIMIT;
    while !holders("manifest", &decoy_id).is_empty() {
        assert!(std::time::Instant::now() < deadline, "a deleted object was never reclaimed");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (file, bytes) = pseudo_random_file(work.path(), 32 << 20, "kept");
    stdout(&testnet.shoal(3, &["put", file.to_str().unwrap(), "--name", "kept", "--consistency", "all"]));
    let items = all_items(&testnet, &all);
    testnet.wait_for_exact_placement(&all, &items, REPAIR_LIMIT);
    let away = holders("name", &hex::encode(shoal_core::names::name_key("kept").id));
    // What makes the test bite: some chunk has no copy on a peer that goes away (with 32
    // chunks on 7 of 10 peers, every run but about one in 50,000).
    let kept_only_by_others = bytes.chunks(1 << 20).any(|chunk| {
        let chunk_holders = holders("chunk", &blake3::hash(chunk).to_hex());
        chunk_holders.iter().all(|peer| !away.contains(peer))
    });
    assert!(kept_only_by_others, "every chunk has a copy on a name holder: {away:?}");
    for peer in &away {
        testnet.run("kill", &[&peer.to_string()]);
    }
    // The outage itself, not a wait for a condition: it has to last this long.
    std::thread::sleep(10 * GC_GRACE);
    for peer in &away {
        testnet.run("start", &[&peer.to_string()]);
    }

    testnet.wait_for_exact_placement(&all, &items, REPAIR_LIMIT);
    for &peer in &all {
        let copy = work.path().join("copy");
        stdout(&testnet.shoal(peer, &["get", "kept", "-o", copy.to_str().unwrap()]));
        assert!(std::fs::read(&copy).unwrap() == bytes, "peer {peer} read back other bytes");
    }
}

/// Issue 11, defect 4, through real processes: six peers join a 3-peer testnet holding
/// 48 objects of 32 MiB. Reads through the newcomers, while handoff moves a few GiB and
/// after it has, find every object: no 404 from a new holder that has nothing yet.
#[test]
fn large_objects_read_back_while_six_peers_join() {
    const OBJECTS: usize = 48;
    let testnet = Testnet::up(3);
    let work = tempfile::tempdir().unwrap();
    let objects: Vec<(String, PathBuf)> = (0..OBJECTS)
        .map(|i| {
            let (file, _) = pseudo_random_file(work.path(), 32 << 20, &format!("large-{i}"));
            let id = stdout(&testnet.shoal(1 + i % 3, &["put", file.to_str().unwrap(), "--consistency", "all"]));
            (id, file)
        })
        .collect();
    let items = all_items(&testnet, &[1, 2, 3]);

    testnet.run("add", &["6"]);
    let all: Vec<usize> = (1..=9).collect();
    let during = testnet.placement_error(&all, &items);
    for (n, object) in objects.iter().enumerate() {
        assert_all_read_back(&testnet, 4 + n % 6, std::slice::from_ref(object), work.path());
    }
    assert!(during.is_some(), "handoff was already over when the reads began: they proved nothing");
    testnet.wait_for_exact_placement(&all, &items, Duration::from_secs(300));
    for (n, object) in objects.iter().enumerate() {
        assert_all_read_back(&testnet, 9 - n % 6, std::slice::from_ref(object), work.path());
    }
}
