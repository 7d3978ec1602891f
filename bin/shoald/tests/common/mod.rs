//! Real daemons in one process: libp2p over 127.0.0.1, RocksDB in temp dirs.

#![allow(dead_code)] // each test file uses its own part

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal_api::Client;
use shoal_core::PeerKey;
use shoal_core::placement::closest;
use shoald::{Config, Daemon};

pub struct Peer {
    pub daemon: Daemon,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

/// A daemon on free ports with `tweak` applied to its default settings.
pub async fn start_peer_with(bootstrap: Vec<String>, tweak: impl FnOnce(&mut Config)) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    tweak(&mut config);
    let daemon = Daemon::start(config).await.unwrap();
    let client = Client::new(&daemon.api_url).unwrap();
    Peer { daemon, client, dir }
}

pub async fn start_peer(bootstrap: Vec<String>) -> Peer {
    start_peer_with(bootstrap, |_| {}).await
}

/// `count` peers that bootstrap through the first.
pub async fn start_network(count: usize) -> Vec<Peer> {
    let mut peers = vec![start_peer(vec![]).await];
    for _ in 1..count {
        peers.push(start_peer(peers[0].daemon.p2p_addrs.clone()).await);
    }
    wait_for_one_network(&peers).await;
    peers
}

/// Polls until every peer has all the others in its routing table.
pub async fn wait_for_one_network(peers: &[Peer]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = true;
        for peer in peers {
            settled &= peer.client.status().await.unwrap().network.routing_table_peers == peers.len() - 1;
        }
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "peers did not find each other in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn pseudo_random(len: usize, seed: &str) -> Bytes {
    let mut bytes = vec![0; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut bytes);
    bytes.into()
}

/// A request body of `bytes`, in one frame.
pub fn body(bytes: Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    futures::stream::iter([Ok(bytes)])
}

/// The whole object, or why it could not be read.
pub async fn read_all(client: &Client, id: &shoal_core::ObjectId) -> Result<Vec<u8>, shoal_api::ClientError> {
    use futures::TryStreamExt;
    let download = client.get(id, None).await?;
    let chunks: Vec<Bytes> = download.bytes.try_collect().await?;
    Ok(chunks.concat())
}

pub async fn stop_all(peers: Vec<Peer>) {
    for peer in peers {
        peer.daemon.stop().await.unwrap();
    }
}

/// Checks that every item any of `peers` holds is held by exactly the `r` of them closest
/// to its key, and returns how many items there are.
pub async fn assert_every_item_on_its_r_closest(peers: &[Peer], r: usize) -> usize {
    let keys: Vec<PeerKey> = peers.iter().map(|p| p.daemon.peer_id.parse().unwrap()).collect();
    let mut holders: HashMap<String, BTreeSet<PeerKey>> = HashMap::new();
    for (peer, key) in peers.iter().zip(&keys) {
        for item in peer.client.local_items().await.unwrap() {
            holders.entry(item.id).or_default().insert(key.clone());
        }
    }
    for (item, held_by) in &holders {
        let id = hex::decode(item).unwrap();
        let expected: BTreeSet<PeerKey> = closest(&id, &keys, r).into_iter().collect();
        assert_eq!(held_by, &expected, "item {item}");
    }
    holders.len()
}
