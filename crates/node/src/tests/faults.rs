//! Faults of the network itself, as raft-rs' harness drives them: partitions, one-way
//! links, and answers lost after the peer acted. None may cost a copy.

use super::*;

impl Cluster {
    /// Cuts every link between `side` and the other peers, both ways; each side sees the
    /// other's connections close.
    fn partition(&self, side: &[usize]) {
        let others: Vec<usize> = (0..self.peers.len()).filter(|index| !side.contains(index)).collect();
        let mut cuts = self.world.cuts.lock().unwrap();
        for &a in side {
            for &b in &others {
                cuts.insert((self.peers[a].clone(), self.peers[b].clone()));
                cuts.insert((self.peers[b].clone(), self.peers[a].clone()));
            }
        }
        drop(cuts);
        for &a in side {
            for &b in &others {
                self.node(a).peer_down(&self.peers[b]);
                self.node(b).peer_down(&self.peers[a]);
            }
        }
    }

    /// Restores every link, and every peer meets every other again.
    fn heal(&self) {
        self.world.cuts.lock().unwrap().clear();
        self.world.answers_lost.lock().unwrap().clear();
        self.connect_all();
    }

    /// The answers to requests of these kinds are lost from now on, after the peer acted.
    fn lose_answers(&self, kinds: &[&'static str]) {
        self.world.answers_lost.lock().unwrap().extend(kinds);
    }

    /// A repair round and a collection round on every peer, `rounds` times, one
    /// collection interval apart.
    async fn rounds_everywhere(&self, rounds: u64) {
        for _ in 0..rounds {
            tokio::time::advance(NodeConfig::default().gc_interval).await;
            for index in 0..self.peers.len() {
                self.node(index).repair_round().await;
                let _ = self.node(index).collection_round().await;
            }
        }
    }
}

/// Handoff deletes a copy only once every new holder confirmed it. When the answers to
/// `Store` and `Prove` are lost (the new holders did store what was pushed), no
/// confirmation arrives, so the old holders keep everything; with only `Prove` answers
/// lost, they still keep every chunk and manifest; once answers arrive again, the
/// handoff finishes.
#[tokio::test(start_paused = true)]
async fn a_handoff_whose_confirmations_are_lost_deletes_no_copy() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let objects = put_six_objects(&cluster).await;
    let keys = cluster.all_keys();
    for _ in 0..6 {
        cluster.add_peer();
    }
    cluster.connect_all();
    cluster.lose_answers(&["Store", "Prove"]);
    for _ in 0..3 {
        for index in 0..cluster.peers.len() {
            cluster.node(index).repair_round().await;
        }
    }
    let kept_by_old_holders = |keys: &mut dyn Iterator<Item = &ItemKey>| {
        for key in keys {
            let holders = cluster.holders(key);
            assert!(
                cluster.peers[..3].iter().all(|old| holders.contains(old)),
                "{key:?} left an old holder unconfirmed"
            );
        }
    };
    kept_by_old_holders(&mut keys.iter());
    // Pushes are acknowledged again, so name records and reference sets move; a chunk or
    // manifest still needs its `Prove` answered.
    cluster.world.answers_lost.lock().unwrap().remove("Store");
    for _ in 0..3 {
        for index in 0..cluster.peers.len() {
            cluster.node(index).repair_round().await;
        }
    }
    kept_by_old_holders(&mut keys.iter().filter(|key| !key.kind.is_mergeable()));

    cluster.heal();
    for _ in 0..3 {
        for index in 0..cluster.peers.len() {
            cluster.node(index).repair_round().await;
        }
    }
    cluster.assert_exact_placement(&keys);
    for (id, bytes) in &objects {
        for index in 0..cluster.peers.len() {
            assert_eq!(&get_all(&cluster.node(index), *id).await.unwrap(), bytes, "peer {index}");
        }
    }
}

/// Two halves apart for three times every grace period, each going on with repair and
/// collection, one deleting a name whose holders it has. Nothing the other half's
/// chunks need is collected meanwhile; after healing, every peer reads the kept object,
/// nobody sees the deleted name, its space comes back and every item is on exactly its
/// R closest peers.
#[tokio::test(start_paused = true)]
async fn halves_apart_longer_than_every_grace_lose_nothing_and_reclaim_after_healing() {
    let cluster = Cluster::new(6);
    cluster.connect_all();
    let kept_bytes = object(2 * CHUNK_SIZE + 5);
    let (kept, _) = cluster.node(0).put_named("kept", body(&kept_bytes), Consistency::All).await.unwrap();
    let kept_keys = cluster.all_keys();
    cluster.node(0).put_named("doc", body(&object(2 * CHUNK_SIZE + 9)), Consistency::All).await.unwrap();
    let doc_items: Vec<ItemKey> = cluster.all_keys().into_iter().filter(|key| !kept_keys.contains(key)).collect();

    let side = cluster.holders_of_name("doc");
    cluster.partition(&side);
    cluster.node(side[0]).delete_name("doc", Consistency::Quorum).await.unwrap();
    let config = NodeConfig::default();
    let per_grace = config.gc_grace.as_secs() / config.gc_interval.as_secs();
    cluster.rounds_everywhere(3 * per_grace).await;
    for key in &kept_keys {
        assert!(!cluster.holders(key).is_empty(), "{key:?} was lost during the partition");
    }

    cluster.heal();
    cluster.rounds_everywhere(3 * per_grace).await;
    for index in 0..cluster.peers.len() {
        let node = cluster.node(index);
        assert_eq!(get_all(&node, kept.id).await.unwrap(), kept_bytes, "peer {index}");
        assert_eq!(node.resolve_name("doc", Consistency::Quorum).await.unwrap(), None, "peer {index}");
    }
    for key in doc_items.iter().filter(|key| matches!(key.kind, ItemKind::Chunk | ItemKind::Manifest)) {
        assert!(cluster.holders(key).is_empty(), "{key:?} of the deleted object was never reclaimed");
    }
    cluster.assert_exact_placement(&kept_keys);
}

/// A put at QUORUM goes on once two holders took each chunk; the third holder's chunk
/// write may land after the put's `Refer` reaches it. With one holder refusing
/// references, that third holder's is the `Refer` the level needs: it is sent again
/// until the chunk is there, instead of failing the put (as it did, now and then, in
/// `a_chunk_whose_referring_holders_left_is_not_collected_while_they_are_away`).
#[tokio::test(start_paused = true)]
async fn a_quorum_put_refers_a_holder_whose_chunk_write_is_still_on_its_way() {
    let cluster = Cluster::new(3);
    cluster.connect_all();
    cluster.set_fault(1, Fault::RefusesReferences);
    cluster.set_fault(2, Fault::SlowToStore);
    let bytes = object(CHUNK_SIZE + 1);
    let (receipt, _) = cluster.node(0).put_named("late", body(&bytes), Consistency::Quorum).await.unwrap();
    cluster.world.faults.lock().unwrap().clear();
    for index in 0..3 {
        assert_eq!(get_all(&cluster.node(index), receipt.id).await.unwrap(), bytes, "from peer {index}");
    }
}
