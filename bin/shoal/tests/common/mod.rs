//! What the process-level tests share: a testnet in a temp dir driven through
//! `testnet/`, the CLI and raw HTTP.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shoal_core::PeerKey;
use shoal_core::placement::closest;

/// A testnet in a temp dir; dropping it stops every peer, also when a test fails.
pub struct Testnet {
    dir: tempfile::TempDir,
    /// Set for every testnet command, hence for every daemon it starts.
    env: Vec<(String, String)>,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_shoal")).parent().unwrap().to_owned()
}

impl Testnet {
    pub fn up(peers: usize) -> Self {
        Self::up_with(peers, &[])
    }

    /// A testnet whose commands and daemons see `env` as well.
    pub fn up_with(peers: usize, env: &[(&str, &str)]) -> Self {
        Self::start(&[&peers.to_string()], env)
    }

    /// A testnet of hosts: each peer in a network namespace of its own.
    pub fn up_hosts(peers: usize) -> Self {
        Self::start(&["--hosts", &peers.to_string()], &[])
    }

    /// A testnet with a network key (`testnet/up --private`).
    pub fn up_private(peers: usize) -> Self {
        Self::start(&["--private", &peers.to_string()], &[])
    }

    fn start(up_args: &[&str], env: &[(&str, &str)]) -> Self {
        let env = env.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        let testnet = Testnet { dir: tempfile::tempdir().unwrap(), env };
        let output = testnet.script("up", up_args);
        assert!(output.status.success(), "testnet/up failed: {}", String::from_utf8_lossy(&output.stderr));
        testnet
    }

    pub fn script(&self, name: &str, args: &[&str]) -> Output {
        Command::new(repo().join("testnet").join(name))
            .args(args)
            .env("SHOAL_TESTNET_DIR", self.dir.path())
            .env("SHOAL_BIN_DIR", bin_dir())
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .output()
            .unwrap()
    }

    pub fn api(&self, peer: usize) -> String {
        let output = self.script("api", &[&peer.to_string()]);
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Runs the CLI against peer `peer`, with the testnet's API token if it has one.
    pub fn shoal(&self, peer: usize, args: &[&str]) -> Output {
        let token = std::fs::read_to_string(self.dir.path().join("api-token")).unwrap_or_default();
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("--api")
            .arg(self.api(peer))
            .args(args)
            .env("SHOAL_TOKEN", token.trim())
            .output()
            .unwrap()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn peer_dir(&self, peer: usize) -> PathBuf {
        self.dir.path().join(format!("peer{peer}"))
    }

    /// The hex ids of the items peer `peer` holds.
    pub fn items(&self, peer: usize) -> Vec<String> {
        self.items_with_kind(peer).into_iter().map(|(_, id)| id).collect()
    }

    /// The items peer `peer` holds, as (kind, hex id).
    pub fn items_with_kind(&self, peer: usize) -> Vec<(String, String)> {
        let body = http(&self.api(peer), "GET /v1/items HTTP/1.1\r\nConnection: close\r\n\r\n");
        let json: serde_json::Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let items = json.as_array().unwrap().iter();
        items.map(|item| (item["kind"].as_str().unwrap().to_owned(), item["id"].as_str().unwrap().to_owned())).collect()
    }

    /// Runs a testnet command that must succeed.
    pub fn run(&self, name: &str, args: &[&str]) {
        let output = self.script(name, args);
        assert!(output.status.success(), "testnet/{name} {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    pub fn peer_id(&self, peer: usize) -> PeerKey {
        let status: serde_json::Value =
            serde_json::from_str(&stdout(&self.shoal(peer, &["status", "--json"]))).unwrap();
        status["peer_id"].as_str().unwrap().parse().unwrap()
    }

    /// Whether every item held by `live` peers is on exactly its R closest live peers,
    /// and every item of `expected` is held; describes the first discrepancy otherwise.
    pub fn placement_error(&self, live: &[usize], expected: &BTreeSet<(String, String)>) -> Option<String> {
        let ids: BTreeMap<usize, PeerKey> = live.iter().map(|&p| (p, self.peer_id(p))).collect();
        let keys: Vec<PeerKey> = ids.values().cloned().collect();
        let mut holders: BTreeMap<(String, String), BTreeSet<PeerKey>> = BTreeMap::new();
        for &peer in live {
            for item in self.items_with_kind(peer) {
                holders.entry(item).or_default().insert(ids[&peer].clone());
            }
        }
        if let Some(lost) = expected.iter().find(|item| !holders.contains_key(*item)) {
            return Some(format!("{lost:?} is on no live peer"));
        }
        for (item, held_by) in &holders {
            let wanted: BTreeSet<PeerKey> = closest(&hex::decode(&item.1).unwrap(), &keys, 3).into_iter().collect();
            if *held_by != wanted {
                return Some(format!("{item:?} is on {held_by:?}, should be on {wanted:?}"));
            }
        }
        None
    }

    /// Polls until [`Testnet::placement_error`] has nothing to say, or fails after `limit`.
    pub fn wait_for_exact_placement(&self, live: &[usize], expected: &BTreeSet<(String, String)>, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let Some(error) = self.placement_error(live, expected) else { return };
            assert!(Instant::now() < deadline, "placement not restored within {limit:?}: {error}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        let _ = self.script("down", &[]);
    }
}

pub fn pseudo_random_file(dir: &Path, len: usize, seed: &str) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut bytes);
    let path = dir.join(seed);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

pub fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "command failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap().trim().to_owned()
}

/// A failed command: non-zero exit and exactly one line on stderr, which is returned.
pub fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success(), "command succeeded: {}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr:?}");
    stderr
}

/// Sends raw HTTP/1.1 and returns the whole answer.
pub fn http_bytes(api: &str, request: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(api.trim_start_matches("http://")).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    answer
}

/// Runs `command` to its end, killing it if it takes longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn http(api: &str, request: &str) -> String {
    String::from_utf8(http_bytes(api, request)).unwrap()
}
