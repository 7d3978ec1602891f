//! Eight real daemons in one process: libp2p over 127.0.0.1, RocksDB in temp dirs.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{TryStreamExt, stream};
use shoal_api::Client;
use shoal_core::placement::closest;
use shoal_core::{CHUNK_SIZE, Consistency, ObjectId, PeerKey};
use shoald::{Config, Daemon};

struct Peer {
    daemon: Daemon,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn start_peer(bootstrap: Vec<String>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        api_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let daemon = Daemon::start(config).await.unwrap();
    let client = Client::new(&daemon.api_url).unwrap();
    Peer { daemon, client, _dir: dir }
}

/// Polls until every peer has all the others in its routing table.
async fn wait_for_one_network(peers: &[Peer]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut settled = true;
        for peer in peers {
            settled &= peer.client.status().await.unwrap().routing_table_peers == peers.len() - 1;
        }
        if settled {
            return;
        }
        assert!(Instant::now() < deadline, "peers did not find each other in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pseudo_random(len: usize, seed: &str) -> Bytes {
    let mut bytes = vec![0; len];
    blake3::Hasher::new().update(seed.as_bytes()).finalize_xof().fill(&mut bytes);
    bytes.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_at_all_lands_on_exactly_the_r_closest_of_eight_peers() {
    let first = start_peer(vec![]).await;
    let mut peers = vec![first];
    for _ in 1..8 {
        peers.push(start_peer(peers[0].daemon.p2p_addrs.clone()).await);
    }
    wait_for_one_network(&peers).await;

    let bytes = pseudo_random(5 * CHUNK_SIZE + 17, "eight peers");
    let body = stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
    let receipt = peers[0].client.put(body, Some(Consistency::All)).await.unwrap();
    assert_eq!(receipt.id, ObjectId::from(blake3::hash(&bytes)));
    assert_eq!((receipt.chunks, receipt.acks), (6, 3));

    let keys: Vec<PeerKey> = peers.iter().map(|p| p.daemon.peer_id.parse().unwrap()).collect();
    let mut holders: HashMap<String, BTreeSet<PeerKey>> = HashMap::new();
    for (peer, key) in peers.iter().zip(&keys) {
        for item in peer.client.local_items().await.unwrap() {
            holders.entry(item.id).or_default().insert(key.clone());
        }
    }
    assert_eq!(holders.len(), 7, "six chunks, and the manifest and pin of an unnamed object, which share its id");
    for (item, held_by) in &holders {
        let id = hex::decode(item).unwrap();
        let expected: BTreeSet<PeerKey> = closest(&id, &keys, 3).into_iter().collect();
        assert_eq!(held_by, &expected, "item {item}");
    }

    for (index, peer) in peers.iter().enumerate() {
        let download = peer.client.get(&receipt.id, None).await.unwrap();
        let parts: Vec<Bytes> = download.bytes.try_collect().await.unwrap();
        assert!(parts.concat() == bytes, "peer {index} returned other bytes");
    }

    for peer in peers {
        peer.daemon.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_data_dir_fails_at_once() {
    let peer = start_peer(vec![]).await;
    let config = Config {
        data_dir: peer._dir.path().to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let error = Daemon::start(config).await.unwrap_err().to_string();
    assert!(error.contains("is in use by another shoald"), "{error}");
    peer.daemon.stop().await.unwrap();
}
