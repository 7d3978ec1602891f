//! Puts and gets: placement, consistency levels, verification and batching.

use super::*;

#[tokio::test]
async fn put_at_all_lands_on_exactly_the_r_closest_and_reads_back_everywhere() {
    let cluster = Cluster::new(8);
    let bytes = object(3 * CHUNK_SIZE + 12_345);
    let receipt = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap();
    assert_eq!(receipt.id, ObjectId::from(blake3::hash(&bytes)));
    assert_eq!((receipt.size, receipt.chunks, receipt.acks), (bytes.len() as u64, 4, 3));

    let keys = cluster.all_keys();
    assert_eq!(keys.len(), 11, "four chunks, a manifest, the pin of an unnamed object, a reference set each");
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

/// Issue 12: a lookup that found fewer than k peers stands for the whole network for a
/// moment, but one that timed out found only some: taken for everyone, it placed every
/// key among those few.
#[tokio::test(start_paused = true)]
async fn only_a_lookup_that_ran_to_its_end_stands_for_the_whole_network() {
    use std::sync::atomic::Ordering::Relaxed;
    let cluster = Cluster::new(4);
    let node = cluster.node(0);
    let keys = [ItemKey::chunk(shoal_core::ChunkId([1; 32])), ItemKey::chunk(shoal_core::ChunkId([2; 32]))];
    cluster.world.lookups_time_out.store(true, Relaxed);
    for key in &keys {
        node.placement(key).await.unwrap();
    }
    assert_eq!(cluster.world.lookups.load(Relaxed), 2, "a timed-out lookup was reused");
    cluster.world.lookups_time_out.store(false, Relaxed);
    for key in &keys {
        node.placement(key).await.unwrap();
    }
    assert_eq!(cluster.world.lookups.load(Relaxed), 3, "a finished lookup of a small network stands for it");
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
    assert!(cluster.all_keys().iter().all(|k| matches!(k.kind, ItemKind::Chunk | ItemKind::References)));
}

#[tokio::test]
async fn a_small_unnamed_objects_chunk_manifest_and_pin_travel_as_one_batch() {
    let cluster = Cluster::new(5);
    let bytes = object(4096);
    let id = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap().id;
    let holders: HashSet<_> = closest(&id.0, &cluster.peers, 3).into_iter().collect();
    assert_eq!(cluster.holders(&ItemKey { kind: ItemKind::Chunk, id: id.0 }), holders);
    assert_eq!(cluster.holders(&ItemKey::manifest(id)), holders);
    assert_eq!(cluster.holders(&shoal_core::names::name_key(&id.to_hex())), holders);

    let batches = cluster.world.store_batches.lock().unwrap().clone();
    let remote_holders = holders.iter().filter(|p| **p != cluster.peers[0]).count();
    assert_eq!(batches.len(), remote_holders, "one request per remote holder: {batches:?}");
    let one_batch = [ItemKind::Chunk, ItemKind::Manifest, ItemKind::References, ItemKind::Name];
    assert!(batches.iter().all(|kinds| *kinds == one_batch), "{batches:?}");
}

/// A put is acknowledged only by holders that have a chunk and its reference both: a
/// holder with the reference alone keeps nothing, and one with the chunk alone keeps it
/// only until its upload lease ends.
#[tokio::test]
async fn references_acked_by_a_holder_without_the_chunk_do_not_count() {
    let cluster = Cluster::new(3);
    cluster.set_fault(1, Fault::RefusesChunks);
    cluster.set_fault(2, Fault::RefusesReferences);
    let error = cluster.node(0).put(body(&object(2 * CHUNK_SIZE)), Consistency::Quorum).await.unwrap_err();
    assert!(
        matches!(error, NodeError::InsufficientAcks { key, got: 1, .. } if key.kind == ItemKind::References),
        "{error}"
    );
    assert!(cluster.all_keys().iter().all(|key| key.kind != ItemKind::Manifest), "the object became visible");
}

#[tokio::test]
async fn a_store_batch_of_two_ids_is_refused_whole() {
    let cluster = Cluster::new(2);
    let (a, b) = (object(10), object(20));
    let key = |bytes: &Bytes| ItemKey { kind: ItemKind::Chunk, id: *blake3::hash(bytes).as_bytes() };
    let request = Request::Store { items: vec![(key(&a), a.clone()), (key(&b), b.clone())] };
    let response = cluster.node(1).handle_request(&cluster.peers[0], request).await;
    assert!(matches!(response, Response::Failed(_)), "{response:?}");
    assert!(cluster.all_keys().is_empty());
}

/// Issue 11, defect 8: one request may not make a peer walk its index over and over under
/// the index lock, as 4,096 copies of the root node did.
#[tokio::test]
async fn a_digest_request_that_covers_buckets_twice_is_refused() {
    use shoal_core::digest::TreeNode;
    let cluster = Cluster::new(3);
    cluster.connect_all();
    put_six_objects(&cluster).await;
    let holder = cluster.node(1);
    let ask = |nodes: Vec<TreeNode>| holder.handle_request(&cluster.peers[0], Request::Digests { nodes });
    let response = ask(vec![TreeNode::ROOT; 4096]).await;
    assert!(matches!(&response, Response::Failed(reason) if reason.contains("malformed")), "{response:?}");
    let response = ask(TreeNode::ROOT.children().collect()).await;
    assert!(matches!(&response, Response::Digests(digests) if digests.len() == 16), "{response:?}");
}

#[tokio::test]
async fn the_empty_object_round_trips() {
    let cluster = Cluster::new(3);
    let receipt =
        cluster.node(0).put(stream::empty::<Result<Bytes, std::io::Error>>(), Consistency::All).await.unwrap();
    assert_eq!(receipt.id, ObjectId::of_empty());
    assert_eq!(get_all(&cluster.node(2), receipt.id).await.unwrap(), Bytes::new());
}

/// Many puts at once, more than the replica-write slots: each waits for all of its slots at
/// once, so none holds some while it waits for the rest, which let puts deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_beyond_the_write_slots_all_finish() {
    let mut cluster = Cluster { world: Arc::new(World::default()), peers: Vec::new() };
    for _ in 0..3 {
        cluster.add_peer_with(NodeConfig { chunks_in_flight: 1, ..NodeConfig::default() });
    }
    let node = cluster.node(0);
    let puts = (0..64).map(|i| {
        let (node, bytes) = (node.clone(), object(4096 + i));
        tokio::spawn(async move { node.put(body(&bytes), Consistency::Quorum).await.map(drop) })
    });
    let all = tokio::time::timeout(Duration::from_secs(30), futures::future::try_join_all(puts)).await;
    for put in all.expect("puts deadlocked on the write slots").unwrap() {
        put.unwrap();
    }
}
