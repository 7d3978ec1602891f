//! A private network (one network key on every peer) lets no one else in. A stock peer
//! without the key, and one with another key, bootstrap through its peers and never
//! complete a connection: they cannot store on it, read from it, list it or delete from
//! it, and its data stays as it was.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Peer, body, pseudo_random, read_all, start_peer_with, stop_all, wait_for_one_network};
use shoal_core::Consistency;
use shoal_net::NetworkKey;
use shoald::{Config, Daemon};

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    NetworkKey::generate().unwrap().create_file(&path).unwrap();
    path
}

async fn start_private_network(count: usize, key: &Path) -> Vec<Peer> {
    let with_key = |c: &mut Config| c.network_key = Some(key.to_owned());
    let mut peers = vec![start_peer_with(vec![], with_key).await];
    for _ in 1..count {
        peers.push(start_peer_with(peers[0].daemon.p2p_addrs.clone(), with_key).await);
    }
    wait_for_one_network(&peers).await;
    peers
}

async fn local_items(peers: &[Peer]) -> Vec<Vec<shoal_api::LocalItem>> {
    let mut items = Vec::new();
    for peer in peers {
        let mut held = peer.client.local_items().await.unwrap();
        held.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        items.push(held);
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_the_network_key_cannot_connect_store_fetch_list_or_delete() {
    let keys = tempfile::tempdir().unwrap();
    let ours = new_key(keys.path(), "swarm.key");
    let theirs = new_key(keys.path(), "other.key");
    let peers = start_private_network(3, &ours).await;
    let object = pseudo_random(3 << 20, "private object");
    let receipt = peers[0].client.put(body(object.clone()), Some(Consistency::All)).await.unwrap();
    let named = peers[0].client.put_named("kept", body(pseudo_random(1000, "named")), Some(Consistency::All)).await;
    let named = named.unwrap();
    let held_before = local_items(&peers).await;

    let everyone: Vec<String> = peers.iter().map(|p| p.daemon.p2p_addrs[0].clone()).collect();
    let stranger = start_peer_with(everyone.clone(), |_| {}).await;
    let intruder = start_peer_with(everyone, |c| c.network_key = Some(theirs.clone())).await;
    // Each dials its three bootstrap peers at start and again every 5 s while alone: two
    // rounds of failed handshakes prove it tried, and kept trying.
    let deadline = Instant::now() + Duration::from_secs(30);
    for outsider in [&stranger, &intruder] {
        loop {
            let network = outsider.client.status().await.unwrap().network;
            // Its routing table holds the bootstrap peers it was given, never confirmed.
            assert_eq!(network.peers_connected, 0, "an outsider got in");
            if network.handshakes_failed >= 6 {
                break;
            }
            assert!(Instant::now() < deadline, "only {} failed handshakes in 30 s", network.handshakes_failed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    for outsider in [&stranger, &intruder] {
        assert!(read_all(&outsider.client, &receipt.id).await.is_err(), "an outsider read a private object");
        assert!(outsider.client.list_names("", None, None).await.unwrap().names.is_empty(), "an outsider listed names");
        let _ = outsider.client.delete_name("kept", Some(Consistency::One)).await;
        let _ = outsider.client.delete_object(&receipt.id, Some(Consistency::One)).await;
        let _ = outsider.client.put_named("kept", body(pseudo_random(10, "rebound")), Some(Consistency::One)).await;
        let _ = outsider.client.put(body(pseudo_random(10, "planted")), Some(Consistency::One)).await;
    }

    let key = peers[0].client.status().await.unwrap().network.network_key;
    assert!(key.is_some());
    for peer in &peers {
        let network = peer.client.status().await.unwrap().network;
        assert_eq!((network.peers_connected, network.routing_table_peers), (2, 2), "only the key holders");
        assert_eq!(network.network_key, key, "one key, one fingerprint");
        assert_eq!(read_all(&peer.client, &receipt.id).await.unwrap(), object);
        let (_, binding) = peer.client.get_named("kept", Some(Consistency::All)).await.unwrap();
        assert_eq!(binding.id, named.object.id, "the name still points where the network bound it");
    }
    assert!(peers[0].client.status().await.unwrap().network.handshakes_failed > 0, "it saw the outsiders knock");
    assert_eq!(local_items(&peers).await, held_before, "the network's data is unchanged");
    stop_all(peers).await;
    stop_all(vec![stranger, intruder]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_network_key_file_stops_the_daemon_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("swarm.key");
    std::fs::write(&key, "/key/swarm/psk/1.0.0/\n/base16/\nnot-hex\n").unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_addr: "127.0.0.1:0".parse().unwrap(),
        network_key: Some(key),
        ..Config::default()
    };
    let error = Daemon::start(config).await.unwrap_err().to_string();
    assert!(error.contains("is not a swarm.key") && !error.contains('\n'), "{error}");
}
