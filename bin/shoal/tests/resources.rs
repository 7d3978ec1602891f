//! Real processes short of a resource an ordinary load exhausts.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const PEERS: usize = 4;
const STARVED: usize = 2;

/// Sets the soft RLIMIT_NOFILE of process `pid` (the hard limit stays).
fn set_open_files_limit(pid: &str, soft: u64) {
    let status = Command::new("prlimit").args(["--pid", pid, &format!("--nofile={soft}:")]).status().unwrap();
    assert!(status.success(), "prlimit failed");
}

fn open_files_limit(pid: &str) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Issue 11, defect 2, through real processes: a peer that cannot open one more file
/// (EMFILE) while others fetch from it and its own scrub reads every copy. Before, any
/// read error counted as corruption and the copy was deleted, so one coordinator's gets
/// could make every holder drop its copies. Now every get is served by the other holders,
/// the starved peer reports read errors and no corruption, and no peer loses an item.
#[test]
fn a_peer_at_its_descriptor_limit_deletes_nothing() {
    let work = tempfile::tempdir().unwrap();
    // Scrub passes one after the other, so the starved peer reads its own copies too.
    let config = work.path().join("scrub-often.toml");
    std::fs::write(&config, "scrub_pause_secs = 1\n").unwrap();
    let testnet = Testnet::up_with(PEERS, &[("SHOAL_CONFIG", config.to_str().unwrap())]);
    let mut objects = Vec::new();
    for n in 0..6 {
        let (file, bytes) = pseudo_random_file(work.path(), 3 << 20, &format!("object-{n}"));
        let id = stdout(&testnet.shoal(1, &["put", file.to_str().unwrap(), "--consistency", "all"]));
        objects.push((id, bytes));
    }
    let held: Vec<BTreeSet<(String, String)>> =
        (1..=PEERS).map(|peer| testnet.items_with_kind(peer).into_iter().collect()).collect();

    let pid = std::fs::read_to_string(testnet.peer_dir(STARVED).join("pid")).unwrap().trim().to_owned();
    let limit = open_files_limit(&pid);
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64;
    set_open_files_limit(&pid, open);

    // Gets through the other peers, until the starved peer has failed to open files.
    let log = testnet.peer_dir(STARVED).join("log");
    let starved = || std::fs::read_to_string(&log).unwrap().contains("Too many open files");
    let deadline = Instant::now() + Duration::from_secs(60);
    let copy = work.path().join("copy");
    let mut rounds = 0;
    while rounds < 3 || !starved() {
        assert!(Instant::now() < deadline, "peer {STARVED} never ran out of descriptors");
        for via in (1..=PEERS).filter(|&peer| peer != STARVED) {
            for (id, bytes) in &objects {
                stdout(&testnet.shoal(via, &["get", id, "-o", copy.to_str().unwrap()]));
                assert!(std::fs::read(&copy).unwrap() == *bytes, "peer {via} returned other bytes for {id}");
            }
        }
        rounds += 1;
    }
    set_open_files_limit(&pid, limit);

    for peer in 1..=PEERS {
        let now: BTreeSet<(String, String)> = testnet.items_with_kind(peer).into_iter().collect();
        let lost: Vec<_> = held[peer - 1].difference(&now).collect();
        assert!(lost.is_empty(), "peer {peer} lost {lost:?}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&testnet.shoal(STARVED, &["status", "--json"]))).unwrap();
    assert!(status["repair"]["read_errors"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["repair"]["corrupt_found"], 0, "{status}");
    for (id, bytes) in &objects {
        stdout(&testnet.shoal(STARVED, &["get", id, "-o", copy.to_str().unwrap()]));
        assert!(std::fs::read(&copy).unwrap() == *bytes, "peer {STARVED} returned other bytes for {id}");
    }
}
