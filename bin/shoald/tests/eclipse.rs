//! Issue 14: an eclipse attempt on an open network. Peer ids cost nothing, so an attacker
//! makes many close to one key and connects them all; with no bound they would be all R
//! holders of its items. At most `max_peers_per_subnet` peers of one subnet hold data,
//! so the key keeps a holder among the honest peers, which find its items there.

mod common;

use std::time::{Duration, Instant};

use common::*;
use libp2p::identity::Keypair;
use shoal_core::placement::closest;
use shoal_core::{Consistency, PeerKey};
use shoald::Config;

/// The sybils: this many of the ids closest to the key, out of `CANDIDATES` made.
const SYBILS: usize = 8;
const CANDIDATES: usize = 2000;

fn bounded(config: &mut Config) {
    // Every peer here is on loopback, where the bound counts only when asked to.
    config.max_peers_per_subnet = Some(2);
    config.count_private_subnets = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_peer_ids_close_to_one_key_still_leaves_its_items_on_honest_peers() {
    let bytes = pseudo_random(1000, "eclipsed");
    let key = *blake3::hash(&bytes).as_bytes();
    let candidates: Vec<(Keypair, PeerKey)> = (0..CANDIDATES)
        .map(|_| {
            let keypair = Keypair::generate_ed25519();
            let peer = PeerKey::from_bytes(&keypair.public().to_peer_id().to_bytes());
            (keypair, peer)
        })
        .collect();
    let nearest = closest(&key, candidates.iter().map(|(_, peer)| peer), SYBILS);

    // Three honest peers, each in its own subnet of 127/8. Connections on loopback all come
    // from 127.0.0.1, so the first one dials the others: it sees them at their own
    // addresses, and only the sybils, which dial it, in 127.0.0.0/24.
    let honest_peer = |subnet: usize, bootstrap: Vec<String>| {
        start_peer_with(bootstrap, move |config| {
            bounded(config);
            config.listen = vec![format!("/ip4/127.0.{subnet}.1/tcp/0")];
        })
    };
    let (second, third) = (honest_peer(2, vec![]).await, honest_peer(3, vec![]).await);
    let bootstrap = [&second, &third].iter().flat_map(|peer| peer.daemon.p2p_addrs.clone()).collect();
    let honest = vec![honest_peer(1, bootstrap).await, second, third];
    wait_for_one_network(&honest).await;
    // The sybils, all joining through the first honest peer.
    let mut sybils = Vec::new();
    for (index, (keypair, _)) in candidates.iter().filter(|(_, peer)| nearest.contains(peer)).enumerate() {
        let identity = keypair.to_protobuf_encoding().unwrap();
        sybils.push(
            start_peer_with(honest[0].daemon.p2p_addrs.clone(), |config| {
                bounded(config);
                config.listen = vec![format!("/ip4/127.0.9.{}/tcp/0", index + 1)];
                std::fs::write(config.data_dir.join("identity.key"), &identity).unwrap();
            })
            .await,
        );
    }
    let everyone: Vec<PeerKey> =
        honest.iter().chain(&sybils).map(|peer| peer.daemon.peer_id.parse().unwrap()).collect();
    let unbounded_holders = closest(&key, &everyone, 3);
    assert!(unbounded_holders.iter().all(|peer| nearest.contains(peer)), "the sybils are not the closest");

    // The first honest peer counts its two honest peers and two sybils, never more.
    let deadline = Instant::now() + Duration::from_secs(30);
    while honest[0].client.status().await.unwrap().network.routing_table_peers < 4 {
        assert!(Instant::now() < deadline, "the sybils did not join in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let receipt = honest[0].client.put(body(bytes.clone()), Some(Consistency::All)).await.unwrap();
    assert_eq!(honest[0].client.status().await.unwrap().network.routing_table_peers, 4);

    stop_all(sybils).await;
    for (index, peer) in honest.iter().enumerate() {
        let read = read_all(&peer.client, &receipt.id).await;
        assert_eq!(read.ok().as_deref(), Some(&bytes[..]), "honest peer {index} cannot read the object");
    }
    stop_all(honest).await;
}
