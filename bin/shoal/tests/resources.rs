//! Real processes short of a resource an ordinary load exhausts.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Output};
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
    // Below what is open now: descriptors that happened to be open at the count (a
    // chunk being read, a dial) would otherwise leave room for the next few reads.
    set_open_files_limit(&pid, open.saturating_sub(8).max(1));

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

/// A tmpfs of its own for a peer's data dir, unmounted on drop (after the testnet that
/// uses it, if declared before it).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None`, saying so, where this process may not mount (not root, or a container
    /// without the right to).
    fn mount(mib: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let size = format!("size={mib}m");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(dir.path()).output();
        if !mounted.as_ref().is_ok_and(|out| out.status.success()) {
            eprintln!("skipped: cannot mount a small tmpfs here (needs root): {mounted:?}");
            return None;
        }
        Some(Self { dir })
    }

    /// Writes a file until the disk has not one byte left.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        for size in [1 << 20, 4 << 10, 1] {
            while filler.write_all(&vec![0; size]).is_ok() {}
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn put(testnet: &Testnet, file: &std::path::Path, level: &str) -> Output {
    testnet.shoal(1, &["put", file.to_str().unwrap(), "--consistency", level])
}

fn disk_full(testnet: &Testnet, peer: usize) -> bool {
    let status: serde_json::Value = serde_json::from_str(&stdout(&testnet.shoal(peer, &["status", "--json"]))).unwrap();
    status["disk_full"].as_bool().unwrap()
}

fn every_item(testnet: &Testnet, peers: &[usize]) -> BTreeSet<(String, String)> {
    peers.iter().flat_map(|&peer| testnet.items_with_kind(peer)).collect()
}

/// Issue 11, defect 9, through real processes: one peer's disk filled to the last byte.
/// Writes it would hold are refused with the reason (at ALL the put fails naming it; at
/// QUORUM the others ack), its reads go on, it says it is full, and once space is freed
/// it takes writes again by itself and repair gives it what it missed; nothing acked is
/// lost anywhere.
#[test]
fn a_peer_whose_disk_fills_to_the_last_byte_loses_nothing_and_recovers() {
    let Some(disk) = SmallDisk::mount(128) else { return };
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("reserve.toml");
    std::fs::write(&config, format!("min_free_bytes = {}\n", 8 << 20)).unwrap();
    let testnet = Testnet::up_with(3, &[("SHOAL_CONFIG", config.to_str().unwrap())]);
    std::os::unix::fs::symlink(disk.dir.path(), testnet.peer_dir(4)).unwrap();
    testnet.run("add", &["1"]);
    let peers = [1, 2, 3, 4];
    let full_peer = testnet.peer_id(4).to_string();

    let mut acked = Vec::new();
    let mut files = (0..).map(|n| pseudo_random_file(work.path(), 2 << 20, &format!("object-{n}")));
    for (file, bytes) in files.by_ref().take(6) {
        acked.push((stdout(&put(&testnet, &file, "all")), bytes));
    }
    testnet.wait_for_exact_placement(&peers, &every_item(&testnet, &peers), Duration::from_secs(60));
    assert!(!disk_full(&testnet, 4));

    disk.fill();
    let mut refused = Vec::new();
    for (file, bytes) in files.by_ref().take(6) {
        let output = put(&testnet, &file, "all");
        if output.status.success() {
            acked.push((stdout(&output), bytes));
        } else {
            let error = one_line_error(&output);
            assert!(error.contains("disk full") && error.contains(&full_peer), "{error}");
            refused.push(file);
        }
    }
    assert!(!refused.is_empty(), "no put needed the full peer");
    assert!(disk_full(&testnet, 4));
    for file in &refused {
        let bytes = std::fs::read(file).unwrap();
        acked.push((stdout(&put(&testnet, file, "quorum")), bytes));
    }
    let copy = work.path().join("copy");
    for (id, bytes) in &acked {
        stdout(&testnet.shoal(4, &["get", id, "-o", copy.to_str().unwrap()]));
        assert!(std::fs::read(&copy).unwrap() == *bytes, "the full peer returned other bytes for {id}");
    }

    disk.free();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !put(&testnet, &refused[0], "all").status.success() {
        assert!(Instant::now() < deadline, "writes did not recover within 60 s of freeing space");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!disk_full(&testnet, 4));
    testnet.wait_for_exact_placement(&peers, &every_item(&testnet, &peers), Duration::from_secs(120));
    for peer in peers {
        for (id, bytes) in &acked {
            stdout(&testnet.shoal(peer, &["get", id, "-o", copy.to_str().unwrap()]));
            assert!(std::fs::read(&copy).unwrap() == *bytes, "peer {peer} returned other bytes for {id}");
        }
    }
}
