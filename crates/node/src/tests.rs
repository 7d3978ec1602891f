//! The replica logic over an in-memory network of in-memory peers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{TryStreamExt, stream};
use shoal_core::placement::closest;
use shoal_core::wire::{Request, Response};
use shoal_core::{CHUNK_SIZE, Consistency, ItemKey, ItemKind, ObjectId, PeerKey};
use shoal_store::{MemoryStore, Store};

use crate::{Network, NetworkError, NetworkStatus, Node, NodeConfig, NodeError};

type TestNode = Node<MemoryStore, FakeNetwork>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Down,
    /// Answers fetches with one byte flipped.
    Lies,
}

#[derive(Debug, Default)]
struct World {
    nodes: Mutex<HashMap<PeerKey, TestNode>>,
    faults: Mutex<HashMap<PeerKey, Fault>>,
}

#[derive(Debug, Clone)]
struct FakeNetwork {
    me: PeerKey,
    world: Arc<World>,
}

impl FakeNetwork {
    fn fault(&self, peer: &PeerKey) -> Option<Fault> {
        self.world.faults.lock().unwrap().get(peer).copied()
    }
}

impl Network for FakeNetwork {
    fn local_peer(&self) -> &PeerKey {
        &self.me
    }

    async fn closest_peers(&self, key: &[u8]) -> Result<Vec<PeerKey>, NetworkError> {
        let nodes = self.world.nodes.lock().unwrap();
        let live: Vec<&PeerKey> =
            nodes.keys().filter(|p| **p != self.me && self.fault(p) != Some(Fault::Down)).collect();
        Ok(closest(key, live, 20))
    }

    async fn request(&self, peer: &PeerKey, request: Request) -> Result<Response, NetworkError> {
        let fault = self.fault(peer);
        if fault == Some(Fault::Down) {
            return Err(NetworkError(format!("{peer} unreachable")));
        }
        let node = self.world.nodes.lock().unwrap().get(peer).cloned().expect("known peer");
        let response = node.handle_request(&self.me, request).await;
        Ok(match (fault, response) {
            (Some(Fault::Lies), Response::Item(Some(bytes))) => {
                let mut bad = bytes.to_vec();
                bad[0] ^= 1;
                Response::Item(Some(bad.into()))
            }
            (_, response) => response,
        })
    }

    async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        let peers = self.world.nodes.lock().unwrap().len() - 1;
        Ok(NetworkStatus {
            peer_id: self.me.to_string(),
            listen_addrs: vec![],
            routing_table_peers: peers,
            connected_peers: peers,
        })
    }
}

struct Cluster {
    world: Arc<World>,
    peers: Vec<PeerKey>,
}

impl Cluster {
    fn new(size: usize) -> Self {
        let mut cluster = Self { world: Arc::new(World::default()), peers: Vec::new() };
        for _ in 0..size {
            cluster.add_peer();
        }
        cluster
    }

    /// Adds a peer with an empty store; returns its index.
    fn add_peer(&mut self) -> usize {
        let peer = PeerKey::from_bytes(format!("peer-{}", self.peers.len()).as_bytes());
        let network = FakeNetwork { me: peer.clone(), world: self.world.clone() };
        let node = Node::new(NodeConfig::default(), MemoryStore::default(), network);
        self.world.nodes.lock().unwrap().insert(peer.clone(), node);
        self.peers.push(peer);
        self.peers.len() - 1
    }

    fn node(&self, index: usize) -> TestNode {
        self.world.nodes.lock().unwrap()[&self.peers[index]].clone()
    }

    fn set_fault(&self, index: usize, fault: Fault) {
        self.world.faults.lock().unwrap().insert(self.peers[index].clone(), fault);
    }

    /// Which peers hold `key` in their store.
    fn holders(&self, key: &ItemKey) -> HashSet<PeerKey> {
        let nodes = self.world.nodes.lock().unwrap();
        nodes.iter().filter(|(_, n)| n.inner.store.contains(key).unwrap()).map(|(p, _)| p.clone()).collect()
    }

    fn all_keys(&self) -> HashSet<ItemKey> {
        let nodes = self.world.nodes.lock().unwrap();
        let mut keys = HashSet::new();
        for node in nodes.values() {
            for kind in ItemKind::ALL {
                keys.extend(node.inner.store.keys(kind).unwrap());
            }
        }
        keys
    }
}

fn object(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 + i / 1000) as u8).collect::<Vec<_>>().into()
}

/// A body delivered in uneven frames, as HTTP delivers it.
fn body(bytes: &Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    let frames: Vec<_> = bytes.chunks(100_003).map(|f| Ok(Bytes::copy_from_slice(f))).collect();
    stream::iter(frames)
}

async fn get_all(node: &TestNode, id: ObjectId) -> Result<Bytes, NodeError> {
    let manifest = node.manifest(id).await?;
    let size = manifest.size;
    let parts: Vec<Bytes> = node.read(manifest, 0..size).try_collect().await?;
    Ok(parts.concat().into())
}

#[tokio::test]
async fn put_at_all_lands_on_exactly_the_r_closest_and_reads_back_everywhere() {
    let cluster = Cluster::new(8);
    let bytes = object(3 * CHUNK_SIZE + 12_345);
    let receipt = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap();
    assert_eq!(receipt.id, ObjectId::from(blake3::hash(&bytes)));
    assert_eq!((receipt.size, receipt.chunks, receipt.acks), (bytes.len() as u64, 4, 3));

    let keys = cluster.all_keys();
    assert_eq!(keys.len(), 5, "four chunks and a manifest");
    for key in &keys {
        let expected: HashSet<_> = closest(&key.id, &cluster.peers, 3).into_iter().collect();
        assert_eq!(cluster.holders(key), expected, "{key:?}");
    }
    for index in 0..8 {
        assert_eq!(get_all(&cluster.node(index), receipt.id).await.unwrap(), bytes, "peer {index}");
    }
}

#[tokio::test]
async fn writes_go_to_the_r_closest_reachable_peers() {
    let cluster = Cluster::new(5);
    let bytes = object(1000);
    let id = ObjectId::from(blake3::hash(&bytes));
    let down = cluster.peers.iter().position(|p| *p == closest(&id.0, &cluster.peers, 1)[0]).unwrap();
    cluster.set_fault(down, Fault::Down);
    let coordinator = (down + 1) % 5;

    let receipt = cluster.node(coordinator).put(body(&bytes), Consistency::All).await.unwrap();
    assert_eq!(receipt.acks, 3);
    let live: Vec<PeerKey> = cluster.peers.iter().filter(|p| **p != cluster.peers[down]).cloned().collect();
    let expected: HashSet<_> = closest(&id.0, &live, 3).into_iter().collect();
    assert_eq!(cluster.holders(&ItemKey::manifest(id)), expected);
}

#[tokio::test]
async fn quorum_tolerates_a_missing_replica_and_all_refuses() {
    let cluster = Cluster::new(3);
    cluster.set_fault(2, Fault::Down);
    let receipt = cluster.node(0).put(body(&object(5000)), Consistency::Quorum).await.unwrap();
    assert_eq!(receipt.acks, 2);

    let error = cluster.node(0).put(body(&object(6000)), Consistency::All).await.unwrap_err();
    assert!(matches!(error, NodeError::InsufficientAcks { got: 2, required: 3, .. }), "{error}");
    assert!(error.to_string().contains("only 2 reachable peers"), "{error}");
}

#[tokio::test]
async fn get_skips_holders_with_wrong_bytes_and_fails_when_all_lie() {
    let mut cluster = Cluster::new(6);
    let bytes = object(2 * CHUNK_SIZE + 1);
    let id = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap().id;
    // A reader that holds nothing itself, so every byte comes over the network.
    let reader = cluster.add_peer();

    let manifest_holders = closest(&id.0, &cluster.peers[..6], 3);
    let liar = cluster.peers.iter().position(|p| *p == manifest_holders[0]).unwrap();
    cluster.set_fault(liar, Fault::Lies);
    assert_eq!(get_all(&cluster.node(reader), id).await.unwrap(), bytes);

    for index in 0..cluster.peers.len() {
        if index != reader {
            cluster.set_fault(index, Fault::Lies);
        }
    }
    let error = get_all(&cluster.node(reader), id).await.unwrap_err();
    assert!(matches!(error, NodeError::Unavailable { .. }), "{error}");
}

#[tokio::test]
async fn unknown_objects_are_not_found() {
    let cluster = Cluster::new(4);
    let error = cluster.node(1).manifest(ObjectId::from(blake3::hash(b"never stored"))).await.unwrap_err();
    assert!(matches!(error, NodeError::NotFound(_)), "{error}");
}

#[tokio::test]
async fn ranges_return_exactly_the_requested_bytes() {
    let cluster = Cluster::new(4);
    let bytes = object(3 * CHUNK_SIZE + 77);
    let id = cluster.node(0).put(body(&bytes), Consistency::Quorum).await.unwrap().id;
    let node = cluster.node(3);
    let manifest = node.manifest(id).await.unwrap();
    let size = bytes.len() as u64;
    for (start, end) in
        [(0, 1), (5, CHUNK_SIZE as u64 + 9), (CHUNK_SIZE as u64, 2 * CHUNK_SIZE as u64), (size - 3, size), (9, 9)]
    {
        let parts: Vec<Bytes> = node.read(manifest.clone(), start..end).try_collect().await.unwrap();
        assert_eq!(parts.concat(), bytes[start as usize..end as usize], "{start}..{end}");
    }
}

#[tokio::test]
async fn a_broken_upload_stores_no_manifest() {
    let cluster = Cluster::new(4);
    let frames = vec![Ok(object(CHUNK_SIZE + 10)), Err(std::io::Error::other("client hung up"))];
    let error = cluster.node(0).put(stream::iter(frames), Consistency::All).await.unwrap_err();
    assert!(matches!(error, NodeError::Body(_)), "{error}");
    assert!(cluster.all_keys().iter().all(|k| k.kind == ItemKind::Chunk));
}

#[tokio::test]
async fn the_empty_object_round_trips() {
    let cluster = Cluster::new(3);
    let receipt =
        cluster.node(0).put(stream::empty::<Result<Bytes, std::io::Error>>(), Consistency::All).await.unwrap();
    assert_eq!(receipt.id, ObjectId::of_empty());
    assert_eq!(get_all(&cluster.node(2), receipt.id).await.unwrap(), Bytes::new());
}
