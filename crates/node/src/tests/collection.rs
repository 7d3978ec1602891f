//! Collection: what may be deleted, and what must stay while evidence is missing.

use shoal_core::codec;
use shoal_core::names::Version;
use shoal_core::references::{References, Referrer, Upload};

use super::*;

impl Cluster {
    /// `count` collection rounds on every live peer, one gc interval apart; returns the
    /// errors they reported.
    pub(super) async fn collection_rounds(&self, count: u64) -> Vec<String> {
        let mut errors = Vec::new();
        for _ in 0..count {
            tokio::time::advance(NodeConfig::default().gc_interval).await;
            for index in self.live() {
                errors.extend(self.node(index).collection_round().await.err());
            }
        }
        errors
    }
}

/// Rounds in one grace period.
fn rounds_per_grace() -> u64 {
    let config = NodeConfig::default();
    config.gc_grace.as_secs() / config.gc_interval.as_secs()
}

#[tokio::test(start_paused = true)]
async fn deleting_one_of_two_objects_that_share_chunks_reclaims_only_its_own() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let a = object(3 * CHUNK_SIZE);
    let mut b = a[..2 * CHUNK_SIZE].to_vec();
    b.extend(std::iter::repeat_n(9u8, CHUNK_SIZE));
    let b = Bytes::from(b);
    let node = cluster.node(0);
    let (a_receipt, _) = node.put_named("a", body(&a), Consistency::All).await.unwrap();
    let (b_receipt, _) = node.put_named("b", body(&b), Consistency::All).await.unwrap();
    let a_manifest = node.manifest(a_receipt.id).await.unwrap();
    let a_only = ItemKey::chunk(a_manifest.chunks[2].id);
    let shared = ItemKey::chunk(a_manifest.chunks[0].id);
    node.delete_name("a", Consistency::All).await.unwrap();

    // Within the grace period nothing goes.
    cluster.collection_rounds(rounds_per_grace() - 1).await;
    assert_eq!(cluster.holders(&a_only).len(), 3);

    // The manifest and its own chunk go one grace period after the first round found
    // the tombstone that kills a's references.
    cluster.collection_rounds(2).await;
    assert!(cluster.holders(&a_only).is_empty(), "a's own chunk is still stored");
    assert!(cluster.holders(&ItemKey::manifest(a_receipt.id)).is_empty(), "a's manifest is still stored");
    assert_eq!(cluster.holders(&shared).len(), 3, "a chunk b shares went with a");
    assert_eq!(get_all(&cluster.node(3), b_receipt.id).await.unwrap(), b);
    let collected: u64 =
        (0..5).map(|i| cluster.node(i).inner.counters.collected_items.load(std::sync::atomic::Ordering::Relaxed)).sum();
    assert_eq!(collected, 6, "a's manifest and own chunk, on three peers each");
}

/// From the review of defect 9's fix: on a full disk the deaths a round finds cannot
/// be recorded. That deletes nothing they would have decided (an I/O error is no
/// evidence), and no longer stops the round from deleting what all holders had
/// already agreed on; before, the round returned, so a full peer never gave back
/// space.
#[tokio::test(start_paused = true)]
async fn a_round_that_cannot_record_deaths_still_collects_only_what_was_agreed() {
    let cluster = Cluster::new(3);
    cluster.connect_all();
    let node = cluster.node(0);
    let mut manifests = Vec::new();
    for (name, len) in [("agreed", 2 * CHUNK_SIZE), ("undecided", 2 * CHUNK_SIZE + 1), ("kept", 2 * CHUNK_SIZE + 2)] {
        let (receipt, _) = node.put_named(name, body(&object(len)), Consistency::All).await.unwrap();
        manifests.push(ItemKey::manifest(receipt.id));
    }
    node.delete_name("agreed", Consistency::All).await.unwrap();
    assert_eq!(cluster.collection_rounds(1).await, Vec::<String>::new());
    node.delete_name("undecided", Consistency::All).await.unwrap();
    for index in 0..3 {
        cluster.node(index).inner.store.fail_writes_as_full(true);
    }
    let errors = cluster.collection_rounds(rounds_per_grace() + 1).await;
    assert!(errors.iter().any(|error| error.contains("cannot record dead references")), "{errors:?}");
    let held = |key: &ItemKey| cluster.holders(key).len();
    assert_eq!(held(&manifests[0]), 0, "what every holder had agreed on stayed");
    assert_eq!(held(&manifests[1]), 3, "deaths that could not be recorded deleted something");
    assert_eq!(held(&manifests[2]), 3);

    for index in 0..3 {
        cluster.node(index).inner.store.fail_writes_as_full(false);
    }
    cluster.collection_rounds(rounds_per_grace() + 2).await;
    assert_eq!(held(&manifests[1]), 0, "space did not come back once the disk had room");
    assert_eq!(held(&manifests[2]), 3);
}

#[tokio::test(start_paused = true)]
async fn unnamed_objects_stay_until_deleted_by_id() {
    let cluster = Cluster::new(4);
    cluster.connect_all();
    let bytes = object(CHUNK_SIZE + 5);
    let id = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap().id;
    cluster.collection_rounds(rounds_per_grace() + 2).await;
    assert_eq!(get_all(&cluster.node(2), id).await.unwrap(), bytes);

    cluster.node(1).delete_object(id, Consistency::All).await.unwrap();
    assert!(matches!(cluster.node(1).delete_object(id, Consistency::All).await, Err(NodeError::NotFound(_))));
    cluster.collection_rounds(rounds_per_grace() + 2).await;
    let left = cluster.all_keys();
    assert!(
        left.iter().all(|key| matches!(key.kind, ItemKind::Name | ItemKind::References)),
        "only the tombstone and dead references are left: {left:?}"
    );
}

/// Issue 11, defect 1: under mark and sweep, the chunks of an object whose name and
/// manifest holders were all away for two grace periods were swept by the peers that
/// stayed, and the object was gone when they returned.
#[tokio::test(start_paused = true)]
async fn an_object_outlives_ten_grace_periods_without_its_reference_holders() {
    let cluster = Cluster::new(9);
    cluster.connect_all();
    let bytes = object(4 * CHUNK_SIZE);
    let (receipt, _) = cluster.node(0).put_named("kept", body(&bytes), Consistency::All).await.unwrap();
    let referrers: HashSet<PeerKey> = [shoal_core::names::name_key("kept"), ItemKey::manifest(receipt.id)]
        .iter()
        .flat_map(|key| closest(&key.id, &cluster.peers, 3))
        .collect();
    let away: Vec<usize> = (0..9).filter(|&i| referrers.contains(&cluster.peers[i])).collect();
    for &index in &away {
        cluster.kill(index);
    }
    cluster.collection_rounds(10 * rounds_per_grace()).await;
    for &index in &away {
        cluster.revive(index);
    }
    cluster.collection_rounds(2 * rounds_per_grace()).await;
    for index in 0..9 {
        assert_eq!(get_all(&cluster.node(index), receipt.id).await.unwrap(), bytes, "from peer {index}");
    }
}

/// Issue 11, defect 1: when a 3-peer network grows to 9, the old peers are no longer
/// the holders of most items; under mark and sweep they heard no marks for them and
/// swept them before handoff had moved them.
#[tokio::test(start_paused = true)]
async fn growing_the_network_while_handoff_lags_loses_nothing() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let objects = put_six_objects(&cluster).await;
    for _ in 0..6 {
        cluster.add_peer();
    }
    cluster.connect_all();
    cluster.collection_rounds(3 * rounds_per_grace()).await;
    for index in 0..9 {
        cluster.node(index).repair_round().await;
    }
    cluster.collection_rounds(2 * rounds_per_grace()).await;
    for (id, bytes) in &objects {
        for index in 0..9 {
            assert_eq!(&get_all(&cluster.node(index), *id).await.unwrap(), bytes, "from peer {index}");
        }
    }
}

/// Issue 11, defect 4: for the move window after an arrival, collection also asks the
/// holders the arrival displaced, since a reference may reach them after handoff moved
/// their set (a put that had not seen the arrival yet). One that does not answer keeps
/// the chunk on its new holders; once it answers, they learn its reference.
#[tokio::test(start_paused = true)]
async fn a_displaced_holder_that_does_not_answer_keeps_what_it_may_refer_to() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let bytes = object(2 * CHUNK_SIZE);
    cluster.node(0).put_named("n", body(&bytes), Consistency::All).await.unwrap();
    let manifest = cluster.node(0).manifest(blake3::hash(&bytes).into()).await.unwrap();
    cluster.node(0).delete_name("n", Consistency::All).await.unwrap();
    cluster.collection_rounds(1).await;
    // Dead for longer than the grace period, and nothing collected: no round ran since.
    tokio::time::advance(2 * NodeConfig::default().gc_grace).await;

    for _ in 0..6 {
        cluster.add_peer();
    }
    cluster.connect_all();
    let old: Vec<PeerKey> = cluster.peers[..3].to_vec();
    let (chunk, current, displaced) = manifest
        .chunks
        .iter()
        .find_map(|c| {
            let current = closest(&c.id.0, &cluster.peers, 3);
            let displaced = old.iter().find(|p| !current.contains(p))?.clone();
            Some((ItemKey::chunk(c.id), current, displaced))
        })
        .expect("a chunk with a holder the arrival displaced");
    for _ in 0..3 {
        cluster.repair_everywhere(&HashSet::from([chunk])).await;
    }
    assert_eq!(cluster.holders(&chunk), current.iter().cloned().collect(), "handoff moved the chunk");

    // A late lease reaches the displaced holder alone; the new holders cannot reach it.
    let late = Upload { id: Version { wall_ms: crate::clock::wall_ms(), logical: 0, writer: 7 }, until_ms: u64::MAX };
    let index_of = |peer: &PeerKey| cluster.peers.iter().position(|p| p == peer).unwrap();
    let on_displaced = References::of(Referrer::Upload(late));
    cluster.node(index_of(&displaced)).store_references(vec![(chunk.id, on_displaced)]).await.unwrap();
    cluster.world.cuts.lock().unwrap().extend(current.iter().map(|holder| (holder.clone(), displaced.clone())));
    cluster.collection_rounds(3).await;
    assert_eq!(cluster.holders(&chunk).len(), 3, "collected while a displaced holder did not answer");

    cluster.world.cuts.lock().unwrap().clear();
    cluster.collection_rounds(3).await;
    assert_eq!(cluster.holders(&chunk).len(), 3, "collected a chunk the displaced holder refers to");
}

/// A newer record that only one holder of the name has is not durable evidence: if
/// that holder's disk is lost, the old binding is the name's record again.
#[tokio::test(start_paused = true)]
async fn a_newer_record_on_one_name_holder_alone_kills_no_reference() {
    let cluster = Cluster::new(6);
    cluster.connect_all();
    let bytes = object(2 * CHUNK_SIZE);
    let (receipt, _) = cluster.node(0).put_named("n", body(&bytes), Consistency::All).await.unwrap();
    let name_holders = cluster.holders_of_name("n");
    let coordinator = (0..6).find(|i| !name_holders.contains(i)).unwrap();
    cluster.kill(name_holders[0]);
    cluster.kill(name_holders[1]);
    super::names::bind(&cluster.node(coordinator), "n", 10, Consistency::One).await.unwrap();
    cluster.collection_rounds(3 * rounds_per_grace()).await;

    // The one holder of the newer record is lost; the others return.
    cluster.kill(name_holders[2]);
    cluster.revive(name_holders[0]);
    cluster.revive(name_holders[1]);
    let resolved = cluster.node(coordinator).resolve_name("n", Consistency::Quorum).await.unwrap().unwrap();
    assert_eq!(resolved.id, receipt.id);
    assert_eq!(get_all(&cluster.node(coordinator), receipt.id).await.unwrap(), bytes);
}

#[tokio::test(start_paused = true)]
async fn a_put_that_reuses_chunks_being_collected_keeps_them() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let bytes = object(3 * CHUNK_SIZE);
    let node = cluster.node(0);
    let id = node.put(body(&bytes), Consistency::All).await.unwrap().id;
    node.delete_object(id, Consistency::All).await.unwrap();
    // Every reference is dead and almost past the grace period when the same bytes are
    // put again, under another name.
    cluster.collection_rounds(rounds_per_grace() - 1).await;
    node.put_named("again", body(&bytes), Consistency::All).await.unwrap();
    cluster.collection_rounds(3 * rounds_per_grace()).await;
    for index in 0..5 {
        assert_eq!(get_all(&cluster.node(index), id).await.unwrap(), bytes, "from peer {index}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_upload_is_reclaimed_once_its_lease_ends() {
    let cluster = Cluster::new(4);
    cluster.connect_all();
    // The client hangs up a second after its first two chunks, which are stored by then.
    let frames = vec![Ok(object(2 * CHUNK_SIZE)), Err(std::io::Error::other("client hung up"))];
    let frames = stream::iter(frames).then(|frame| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        frame
    });
    cluster.node(0).put(frames, Consistency::All).await.unwrap_err();
    let chunks = || cluster.all_keys().into_iter().filter(|key| key.kind == ItemKind::Chunk).count();
    assert_eq!(chunks(), 2);
    let config = NodeConfig::default();
    let rounds = |span: Duration| (span.as_secs() / config.gc_interval.as_secs()).max(1);
    cluster.collection_rounds(rounds(config.upload_lifetime) - 1).await;
    assert_eq!(chunks(), 2, "kept while the lease runs");
    cluster.collection_rounds(rounds(config.gc_grace) + 2).await;
    assert_eq!(chunks(), 0, "reclaimed one grace period after the lease ended");
}

/// A QUORUM named put of two chunks on 3 peers, two of which have `fault`: it fails, and
/// leaves `kept` chunks and manifests, which are gone `wait` after the faults clear.
async fn a_failed_put_is_reclaimed(fault: Fault, kept: usize, wait: Duration) {
    let cluster = Cluster::new(3);
    cluster.connect_all();
    cluster.set_fault(1, fault);
    cluster.set_fault(2, fault);
    let error = cluster.node(0).put_named("doomed", body(&object(2 * CHUNK_SIZE)), Consistency::Quorum).await;
    assert!(error.is_err(), "one ack of the two QUORUM needs");
    cluster.world.faults.lock().unwrap().clear();
    let left = || {
        let keys = cluster.all_keys();
        keys.iter().filter(|key| matches!(key.kind, ItemKind::Chunk | ItemKind::Manifest)).count()
    };
    assert_eq!(left(), kept);
    cluster.collection_rounds(wait.as_secs() / NodeConfig::default().gc_interval.as_secs() + 2).await;
    assert_eq!(left(), 0, "reclaimed one grace period after nothing kept them");
}

/// Found by `testnet/chaos --scenario halves`: a named put whose `Refer` reached fewer
/// holders than its level failed, and the binding it had referred the object to, for a
/// version it never wrote, kept the chunks and manifest for as long as the name was not
/// written again. Now the failed put itself records that the binding is dead.
#[tokio::test(start_paused = true)]
async fn a_named_put_that_fails_after_referring_its_chunks_is_reclaimed() {
    // The chunks, whose lease keeps them until it ends.
    let config = NodeConfig::default();
    a_failed_put_is_reclaimed(Fault::RefusesReferences, 2, config.upload_lifetime + config.gc_grace).await;
}

/// The same when the put fails later, at its manifest batch: its chunks were referred to
/// the binding on every holder, and one holder keeps the manifest it stored.
#[tokio::test(start_paused = true)]
async fn a_named_put_that_fails_at_its_manifest_is_reclaimed() {
    a_failed_put_is_reclaimed(Fault::RefusesManifests, 3, NodeConfig::default().gc_grace).await;
}

/// An abandon kills only its own put's binding: an acknowledged object with the same
/// bytes, under another name, keeps every chunk through the failed put's reclamation.
#[tokio::test(start_paused = true)]
async fn a_failed_put_of_the_same_bytes_leaves_the_acknowledged_object_whole() {
    let cluster = Cluster::new(3);
    cluster.connect_all();
    let bytes = object(2 * CHUNK_SIZE);
    let (kept, _) = cluster.node(0).put_named("kept", body(&bytes), Consistency::All).await.unwrap();
    cluster.set_fault(1, Fault::RefusesReferences);
    cluster.set_fault(2, Fault::RefusesReferences);
    cluster.node(0).put_named("doomed", body(&bytes), Consistency::Quorum).await.unwrap_err();
    cluster.world.faults.lock().unwrap().clear();
    let config = NodeConfig::default();
    cluster
        .collection_rounds((config.upload_lifetime + config.gc_grace).as_secs() / config.gc_interval.as_secs() + 2)
        .await;
    for index in 0..3 {
        assert_eq!(get_all(&cluster.node(index), kept.id).await.unwrap(), bytes, "through peer {index}");
    }
    let manifest = cluster.node(0).manifest(kept.id).await.unwrap();
    for chunk in &manifest.chunks {
        assert_eq!(cluster.holders(&ItemKey::chunk(chunk.id)).len(), 3, "a chunk lost a copy");
    }
}

/// Issue 11: a client that hangs up after its body is in used to drop its put between
/// the `Refer` that bound the chunks to the put's version and the record, where only the
/// put can record that binding's death: the chunks stayed for as long as the name was not
/// written again. Now the put runs to its end as the node's own task, here binding the name.
#[tokio::test(start_paused = true)]
async fn a_put_whose_client_hangs_up_after_its_body_still_ends() {
    let cluster = Cluster::new(3);
    cluster.connect_all();
    cluster.set_fault(1, Fault::SlowToStore);
    cluster.set_fault(2, Fault::SlowToStore);
    let bytes = object(2 * CHUNK_SIZE);
    let chunk = ItemKey::references(*blake3::hash(&bytes[..CHUNK_SIZE]).as_bytes());
    let referred = || {
        let set = cluster.node(1).inner.store.get(&chunk).unwrap();
        set.is_some_and(|set| {
            codec::decode::<References>(&set).unwrap().live().any(|r| matches!(r, Referrer::Binding { .. }))
        })
    };
    let coordinator = cluster.node(0);
    tokio::select! {
        answer = coordinator.put_named("left", body(&bytes), Consistency::Quorum) => {
            panic!("the put answered {answer:?} before its manifest was stored")
        }
        () = async {
            while !referred() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } => {}
    }
    // The client is gone; its put has referred the chunks to its binding, and its
    // manifest and record wait for holders slow to store.
    cluster.world.faults.lock().unwrap().clear();
    let id: ObjectId = blake3::hash(&bytes).into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while coordinator.resolve_name("left", Consistency::All).await.unwrap().map(|info| info.id) != Some(id) {
        assert!(tokio::time::Instant::now() < deadline, "the put stopped when its client left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get_all(&coordinator, id).await.unwrap(), bytes);
}

/// Issue 11, from the adversarial review of defect 1's fix: a holder that never got a
/// put's `Refer` keeps the upload lease alone, and once the two holders that did are
/// away past their grace period, repair copies that lease-only set to their
/// replacements. When the lease ends, the counted holders all agree nothing refers to
/// the chunk; before, they deleted it, and the object was gone for as long as the two
/// were away (for good if they never came back). Holders that left have not answered.
#[tokio::test(start_paused = true)]
async fn a_chunk_whose_referring_holders_left_is_not_collected_while_they_are_away() {
    let cluster = Cluster::new(6);
    cluster.connect_all();
    let bytes = object(CHUNK_SIZE + 1);
    let chunk = ItemKey::chunk(blake3::hash(&bytes[..CHUNK_SIZE]).into());
    let holders = closest(&chunk.id, &cluster.peers, 3);
    let index_of = |peer: &PeerKey| cluster.peers.iter().position(|p| p == peer).unwrap();
    let (unreferred, referred) = (index_of(&holders[0]), [index_of(&holders[1]), index_of(&holders[2])]);
    cluster.set_fault(unreferred, Fault::RefusesReferences);
    let coordinator = (0..6).find(|i| *i != unreferred && !referred.contains(i)).unwrap();
    let (receipt, _) = cluster.node(coordinator).put_named("kept", body(&bytes), Consistency::Quorum).await.unwrap();
    cluster.world.faults.lock().unwrap().remove(&cluster.peers[unreferred]);

    for index in referred {
        cluster.kill(index);
    }
    let config = NodeConfig::default();
    tokio::time::advance(config.failure_grace + Duration::from_secs(1)).await;
    for index in cluster.live() {
        cluster.node(index).repair_round().await;
    }
    tokio::time::advance(config.upload_lifetime).await;
    cluster.collection_rounds(2 * rounds_per_grace()).await;
    assert!(
        cluster.holders(&chunk).contains(&cluster.peers[unreferred]),
        "collected while the holders that knew its reference were away"
    );

    for index in referred {
        cluster.revive(index);
    }
    for index in cluster.live() {
        cluster.node(index).repair_round().await;
    }
    cluster.collection_rounds(2 * rounds_per_grace()).await;
    for index in 0..6 {
        assert_eq!(get_all(&cluster.node(index), receipt.id).await.unwrap(), bytes, "from peer {index}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_put_slower_than_the_grace_period_keeps_its_chunks() {
    let cluster = Arc::new(Cluster::new(4));
    cluster.connect_all();
    let config = NodeConfig::default();
    let bytes = object(4 * CHUNK_SIZE);
    // One chunk per grace period: the first is long past its arrival mark when the
    // manifest and the pin finally refer to it.
    let frames: Vec<Bytes> = bytes.chunks(CHUNK_SIZE).map(Bytes::copy_from_slice).collect();
    let slow_body = stream::unfold(frames.into_iter(), move |mut frames| async move {
        let frame = frames.next()?;
        tokio::time::sleep(config.gc_grace).await;
        Some((Ok::<_, std::io::Error>(frame), frames))
    });
    let collector = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(NodeConfig::default().gc_interval).await;
                for index in 0..4 {
                    cluster.node(index).collection_round().await.unwrap();
                }
            }
        })
    };
    let id = cluster.node(0).put(slow_body, Consistency::All).await.unwrap().id;
    collector.abort();
    assert_eq!(get_all(&cluster.node(3), id).await.unwrap(), bytes);
}
