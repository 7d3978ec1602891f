//! What anti-entropy costs between two in-sync peers, by number of items stored.
//!
//! `cargo run --release -p shoal-node --example anti_entropy_cost [ITEMS...]`
//! (default 10000 100000). Two peers with R = 2 hold the same items, so every bucket is
//! shared and compared: the worst case for one pair. Bytes are the encoded sizes of the
//! anti-entropy messages, as they travel on the wire (framing excluded).

#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use shoal_core::NetworkStatus;
use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};
use shoal_core::{ItemKey, PeerKey};
use shoal_node::{Network, NetworkError, Node, NodeConfig};
use shoal_store::{MemoryStore, Store};

type PairNode = Node<MemoryStore, Link>;

/// One side of a two-peer network: requests go straight to the other node.
#[derive(Debug, Clone)]
struct Link {
    me: PeerKey,
    other: Arc<OnceLock<PairNode>>,
}

impl Network for Link {
    fn local_peer(&self) -> &PeerKey {
        &self.me
    }

    async fn closest_peers(&self, _key: &[u8]) -> Result<Lookup, NetworkError> {
        Ok(Lookup { peers: vec![self.other.get().expect("linked").local_peer().clone()], finished: true })
    }

    async fn request(&self, _peer: &PeerKey, request: Request) -> Result<Response, NetworkError> {
        Ok(self.other.get().expect("linked").handle_request(&self.me, request).await)
    }

    async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        let peer_id = self.me.to_string();
        Ok(NetworkStatus {
            peer_id,
            listen_addrs: vec![],
            announced_addrs: vec![],
            routing_table_peers: 1,
            peers_connected: 1,
            network_key: None,
            handshakes_failed: 0,
        })
    }
}

/// A store with `items` small chunks, but for the one numbered `skip`.
fn stocked_store(items: usize, skip: Option<u64>) -> MemoryStore {
    let store = MemoryStore::new();
    let batch: Vec<(ItemKey, Bytes)> = (0..items as u64)
        .filter(|i| Some(*i) != skip)
        .map(|i| {
            let value = Bytes::copy_from_slice(&i.to_le_bytes());
            (ItemKey::chunk(blake3::hash(&value).into()), value)
        })
        .collect();
    store.put(&batch).expect("valid items");
    store
}

async fn anti_entropy_bytes(node: &PairNode) -> u64 {
    node.status().await.expect("status").repair.anti_entropy_bytes
}

async fn measure(items: usize) {
    let config = NodeConfig { replication_factor: 2, ..NodeConfig::default() };
    let (a_peer, b_peer) = (PeerKey::from_bytes(b"peer a"), PeerKey::from_bytes(b"peer b"));
    let (to_b, to_a) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let (a_store, b_store) = (stocked_store(items, None), stocked_store(items, Some(items as u64 / 2)));
    let a = Node::new(config.clone(), a_store, Link { me: a_peer.clone(), other: to_b.clone() }).unwrap();
    let b = Node::new(config, b_store, Link { me: b_peer.clone(), other: to_a.clone() }).unwrap();
    to_b.set(b.clone()).expect("set once");
    to_a.set(a.clone()).expect("set once");
    a.peer_up(b_peer, 0);
    b.peer_up(a_peer, 0);

    // b lacks one item: its round descends the tree to that bucket and fetches it.
    let before = anti_entropy_bytes(&b).await;
    b.repair_round().await;
    let one_missing = anti_entropy_bytes(&b).await - before;
    assert_eq!(b.status().await.unwrap().repair.items_moved, 1, "exactly the missing item moves");

    // Now in sync: a round is one fingerprint each way.
    let before = anti_entropy_bytes(&b).await;
    let started = Instant::now();
    b.repair_round().await;
    let round_ms = started.elapsed().as_secs_f64() * 1000.0;
    let in_sync = anti_entropy_bytes(&b).await - before;
    println!(
        "{items:>7} items: in sync {in_sync} bytes/round ({round_ms:.1} ms); one item missing {one_missing} bytes"
    );
}

#[tokio::main]
async fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("item counts")).collect();
    let counts = if counts.is_empty() { vec![10_000, 100_000] } else { counts };
    println!("anti-entropy between two in-sync peers (R = 2, every bucket shared):");
    for items in counts {
        measure(items).await;
    }
}
