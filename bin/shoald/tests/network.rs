//! Real daemons in one process: libp2p over 127.0.0.1, RocksDB in temp dirs.

mod common;

use bytes::Bytes;
use common::{
    assert_every_item_on_its_r_closest, pseudo_random, start_network, start_peer, start_peer_with, stop_all,
    wait_for_one_network,
};
use futures::{TryStreamExt, stream};
use shoal_core::{CHUNK_SIZE, Consistency, ObjectId};
use shoald::{Config, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_at_all_lands_on_exactly_the_r_closest_of_eight_peers() {
    let peers = start_network(8).await;

    let bytes = pseudo_random(5 * CHUNK_SIZE + 17, "eight peers");
    let body = stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
    let receipt = peers[0].client.put(body, Some(Consistency::All)).await.unwrap();
    assert_eq!(receipt.id, ObjectId::from(blake3::hash(&bytes)));
    assert_eq!((receipt.chunks, receipt.acks), (6, 3));

    let items = assert_every_item_on_its_r_closest(&peers, 3).await;
    assert_eq!(items, 7, "six chunks, and the manifest and pin of an unnamed object, which share its id");

    for (index, peer) in peers.iter().enumerate() {
        let download = peer.client.get(&receipt.id, None).await.unwrap();
        let parts: Vec<Bytes> = download.bytes.try_collect().await.unwrap();
        assert!(parts.concat() == bytes, "peer {index} returned other bytes");
    }

    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_a_data_dir_fails_at_once() {
    let peer = start_peer(vec![]).await;
    let config = Config {
        data_dir: peer.dir.path().to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_addr: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    let error = Daemon::start(config).await.unwrap_err().to_string();
    assert!(error.contains("is in use by another shoald"), "{error}");
    peer.daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_before_its_bootstrap_peer_joins_it_once_it_is_up() {
    // A free port for the bootstrap peer, which is not running yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let early = start_peer(vec![format!("/ip4/127.0.0.1/tcp/{port}")]).await;
    let late = start_peer_with(vec![], |config| config.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}")]).await;
    let peers = vec![early, late];
    wait_for_one_network(&peers).await;
    stop_all(peers).await;
}
