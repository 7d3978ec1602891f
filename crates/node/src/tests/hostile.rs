//! Peers that lie. However a hostile peer answers, no honest peer deletes a copy on its
//! word.

use super::*;

/// Issue 14: a cluster grows by peers that acknowledge every push and claim every item
/// without keeping a byte, relaying any challenge to the peer that asked. The old
/// holders hand nothing off to them, so every copy stays and every object reads back;
/// once the new peers keep what they are sent, the handoff finishes.
#[tokio::test(start_paused = true)]
async fn a_peer_that_claims_items_without_their_bytes_never_makes_a_copy_go() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let objects = put_six_objects(&cluster).await;
    let keys = cluster.all_keys();
    for _ in 0..6 {
        let hoarder = cluster.add_peer();
        cluster.set_fault(hoarder, Fault::Hoards);
    }
    cluster.connect_all();
    for _ in 0..3 {
        for index in 0..3 {
            cluster.node(index).repair_round().await;
        }
    }
    for key in &keys {
        let holders = cluster.holders(key);
        assert!(cluster.peers[..3].iter().all(|old| holders.contains(old)), "{key:?} was handed to a hoarder");
    }
    for (id, bytes) in &objects {
        assert_eq!(&get_all(&cluster.node(0), *id).await.unwrap(), bytes);
    }

    cluster.world.faults.lock().unwrap().clear();
    for _ in 0..3 {
        for index in 0..cluster.peers.len() {
            cluster.node(index).repair_round().await;
        }
    }
    cluster.assert_exact_placement(&keys);
}
