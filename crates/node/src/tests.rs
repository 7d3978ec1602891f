//! The replica logic over an in-memory network of in-memory peers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use shoal_core::placement::{Lookup, closest};
use shoal_core::wire::{Request, Response, possession_proof};
use shoal_core::{CHUNK_SIZE, Consistency, ItemKey, ItemKind, ObjectId, PeerKey};
use shoal_store::{MemoryStore, Store};

use shoal_core::NetworkStatus;

use crate::{Network, NetworkError, Node, NodeConfig, NodeError};

type TestNode = Node<MemoryStore, FakeNetwork>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Down,
    /// Answers fetches with one byte flipped.
    Lies,
    /// Answers after [`SLOW_ANSWER`], a far link.
    Slow,
    /// Takes [`SLOW_ANSWER`] before it acts on a store, as a busy disk does, and answers
    /// everything else at once.
    SlowToStore,
    /// Fails every store of a chunk, as a full chunk directory would.
    RefusesChunks,
    /// Fails every `Refer`.
    RefusesReferences,
    /// Fails every store of a manifest.
    RefusesManifests,
    /// Takes requests and never answers them, as a peer whose process is stopped does.
    Silent,
    /// A hostile peer that keeps nothing: it acknowledges every store and reference, and
    /// answers a challenge with what the peer that sent it gives for the item.
    Hoards,
}

const SLOW_ANSWER: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct World {
    nodes: Mutex<HashMap<PeerKey, TestNode>>,
    faults: Mutex<HashMap<PeerKey, Fault>>,
    /// The kinds in each store request sent, in order.
    store_batches: Mutex<Vec<Vec<ItemKind>>>,
    /// Links cut one way: requests from the first peer to the second fail, as across a
    /// partition or a link that drops everything one way.
    cuts: Mutex<HashSet<(PeerKey, PeerKey)>>,
    /// Request kinds whose answers are lost after the peer acted on them.
    answers_lost: Mutex<HashSet<&'static str>>,
    /// DHT lookups asked for, and whether they time out.
    lookups: std::sync::atomic::AtomicUsize,
    lookups_time_out: std::sync::atomic::AtomicBool,
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

    fn reaches(&self, peer: &PeerKey) -> bool {
        self.fault(peer) != Some(Fault::Down)
            && !self.world.cuts.lock().unwrap().contains(&(self.me.clone(), peer.clone()))
    }
}

/// The name of a request's kind, as [`World::answers_lost`] names it.
fn kind_of(request: &Request) -> &'static str {
    match request {
        Request::Store { .. } => "Store",
        Request::Fetch { .. } => "Fetch",
        Request::Ping => "Ping",
        Request::Digests { .. } => "Digests",
        Request::BucketKeys { .. } => "BucketKeys",
        Request::Prove { .. } => "Prove",
        Request::Holding { .. } => "Holding",
        Request::ListNames { .. } => "ListNames",
        Request::Refer { .. } => "Refer",
    }
}

impl FakeNetwork {
    /// How `hoarder` ([`Fault::Hoards`]) answers a request from this peer.
    async fn hoard(&self, hoarder: &PeerKey, request: Request) -> Response {
        let asker = self.world.nodes.lock().unwrap()[&self.me].clone();
        match request {
            Request::Store { .. } => Response::Stored { newer: None },
            Request::Refer { .. } => Response::Referred { without_chunk: Vec::new() },
            Request::Prove { nonce, keys } => {
                let mut proofs = Vec::new();
                for key in keys {
                    let fetched = asker.handle_request(hoarder, Request::Fetch { key }).await;
                    let bytes = if let Response::Item(Some(bytes)) = fetched { Some(bytes) } else { None };
                    proofs.push(bytes.map(|bytes| possession_proof(&nonce, &bytes)));
                }
                Response::Proofs(proofs)
            }
            Request::Holding { key } => asker.handle_request(hoarder, Request::Fetch { key }).await,
            request => asker.handle_request(hoarder, request).await,
        }
    }
}

impl Network for FakeNetwork {
    fn local_peer(&self) -> &PeerKey {
        &self.me
    }

    async fn closest_peers(&self, key: &[u8]) -> Result<Lookup, NetworkError> {
        use std::sync::atomic::Ordering::Relaxed;
        self.world.lookups.fetch_add(1, Relaxed);
        let nodes = self.world.nodes.lock().unwrap();
        let live: Vec<&PeerKey> = nodes.keys().filter(|p| **p != self.me && self.reaches(p)).collect();
        Ok(Lookup { peers: closest(key, live, 20), finished: !self.world.lookups_time_out.load(Relaxed) })
    }

    async fn request(&self, peer: &PeerKey, request: Request) -> Result<Response, NetworkError> {
        let fault = self.fault(peer);
        if !self.reaches(peer) {
            return Err(NetworkError(format!("{peer} unreachable")));
        }
        let kind = kind_of(&request);
        if fault == Some(Fault::Silent) {
            std::future::pending::<()>().await;
        }
        if fault == Some(Fault::Slow) || (fault == Some(Fault::SlowToStore) && kind == "Store") {
            tokio::time::sleep(SLOW_ANSWER).await;
        }
        if fault == Some(Fault::Hoards) {
            return Ok(self.hoard(peer, request).await);
        }
        let node = self.world.nodes.lock().unwrap().get(peer).cloned().expect("known peer");
        if let Request::Store { items } = &request {
            self.world.store_batches.lock().unwrap().push(items.iter().map(|(key, _)| key.kind).collect());
            if fault == Some(Fault::RefusesChunks) && items.iter().any(|(key, _)| key.kind == ItemKind::Chunk) {
                return Ok(Response::Failed("no space left for chunks".into()));
            }
            if fault == Some(Fault::RefusesManifests) && items.iter().any(|(key, _)| key.kind == ItemKind::Manifest) {
                return Ok(Response::Failed("cannot write manifests".into()));
            }
        }
        if fault == Some(Fault::RefusesReferences) && matches!(request, Request::Refer { .. }) {
            return Ok(Response::Failed("cannot write references".into()));
        }
        let response = node.handle_request(&self.me, request).await;
        if self.world.answers_lost.lock().unwrap().contains(kind) {
            return Err(NetworkError(format!("the answer to {kind} was lost")));
        }
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
            announced_addrs: vec![],
            routing_table_peers: peers,
            peers_connected: peers,
            network_key: None,
            handshakes_failed: 0,
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
        self.add_peer_with(NodeConfig::default())
    }

    fn add_peer_with(&mut self, config: NodeConfig) -> usize {
        let peer = PeerKey::from_bytes(format!("peer-{}", self.peers.len()).as_bytes());
        let network = FakeNetwork { me: peer.clone(), world: self.world.clone() };
        let store = MemoryStore::created_at(crate::clock::wall_ms());
        let node = Node::new(config, store, network).unwrap();
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

/// Six objects of two chunks and a bit, put at ALL through the first three peers in turn.
async fn put_six_objects(cluster: &Cluster) -> Vec<(ObjectId, Bytes)> {
    let mut objects = Vec::new();
    for i in 0..6 {
        let bytes = object(2 * CHUNK_SIZE + i);
        let id = cluster.node(i % 3).put(body(&bytes), Consistency::All).await.unwrap().id;
        objects.push((id, bytes));
    }
    objects
}

async fn get_all(node: &TestNode, id: ObjectId) -> Result<Bytes, NodeError> {
    let manifest = node.manifest(id).await?;
    let size = manifest.size;
    let parts: Vec<Bytes> = node.read(manifest, 0..size).try_collect().await?;
    Ok(parts.concat().into())
}

mod collection;
mod data_path;
mod faults;
mod hostile;
mod listing;
mod moves;
mod names;
mod reads;
mod repair;
