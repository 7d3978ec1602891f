//! Names: versions, read repair, tombstones and clocks.

use shoal_core::codec;
use shoal_core::names::{Binding, MAX_CLOCK_OFFSET_MS, NameRecord, Version, name_key};

use super::*;

impl Cluster {
    /// The record each holder of `name` has, by peer.
    fn records(&self, name: &str) -> Vec<(usize, Option<NameRecord>)> {
        let key = name_key(name);
        (0..self.peers.len())
            .map(|i| (i, self.node(i).inner.store.get(&key).unwrap().map(|v| codec::decode(&v).unwrap())))
            .filter(|(_, record)| record.is_some())
            .collect()
    }

    pub(super) fn holders_of_name(&self, name: &str) -> Vec<usize> {
        let holders = closest(&name_key(name).id, &self.peers, 3);
        holders.iter().map(|h| self.peers.iter().position(|p| p == h).unwrap()).collect()
    }
}

pub(super) async fn bind(
    node: &TestNode,
    name: &str,
    len: usize,
    consistency: Consistency,
) -> Result<ObjectId, NodeError> {
    let (receipt, _) = node.put_named(name, body(&object(len)), consistency).await?;
    Ok(receipt.id)
}

/// Issue 11, defect 5: every repair round reads the other peers' clocks, status shows
/// them, and a peer that most others find too far off coordinates no writes. Before,
/// a holder ten minutes fast stored its own write at a version the others refused,
/// and nine minutes later that version was accepted everywhere and won over every
/// write acknowledged meanwhile.
#[tokio::test(start_paused = true)]
async fn a_peer_whose_clock_most_others_find_far_off_coordinates_no_writes() {
    const SKEW_MS: i64 = 10 * 60_000;
    let mut cluster = Cluster::new(3);
    let fast = cluster.add_peer_with(NodeConfig { clock_skew_ms: SKEW_MS, ..NodeConfig::default() });
    cluster.connect_all();
    for index in 0..4 {
        cluster.node(index).repair_round().await;
    }
    let cluster = &cluster;
    let seen_by = |index: usize, peer: usize| async move {
        let status = cluster.node(index).status().await.unwrap();
        let (_, clock) = status.peer_clocks.into_iter().find(|(p, _)| *p == cluster.peers[peer]).unwrap();
        clock.offset_ms
    };
    assert_eq!(seen_by(0, fast).await, SKEW_MS);
    assert_eq!(seen_by(1, 2).await, 0);
    assert_eq!(seen_by(fast, 0).await, -SKEW_MS);

    let error = bind(&cluster.node(fast), "late", 100, Consistency::Quorum).await.unwrap_err().to_string();
    assert!(error.contains("clock is 600000 ms ahead of most of its peers'"), "{error}");
    assert!(cluster.records("late").is_empty(), "a refused write left a record");
    bind(&cluster.node(0), "late", 100, Consistency::All).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn concurrent_writes_of_one_name_converge_on_every_replica() {
    let cluster = Cluster::new(6);
    cluster.connect_all();
    let (a, b) = (cluster.node(0), cluster.node(5));
    let (first, second) =
        tokio::join!(bind(&a, "race", 100, Consistency::Quorum), bind(&b, "race", 200, Consistency::Quorum));
    let ids = [first.unwrap(), second.unwrap()];
    for index in 0..6 {
        cluster.node(index).repair_round().await;
    }
    let records = cluster.records("race");
    assert_eq!(records.len(), 3, "on exactly R peers: {records:?}");
    assert!(records.windows(2).all(|w| w[0].1 == w[1].1), "replicas disagree: {records:?}");
    let winner = cluster.node(2).resolve_name("race", Consistency::All).await.unwrap().unwrap();
    assert!(ids.contains(&winner.id));
}

#[tokio::test(start_paused = true)]
async fn a_later_write_through_a_lagging_clock_still_wins() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let (ahead, behind) = (cluster.node(0), cluster.node(1));
    // As far ahead as a peer's clock may be and still be heard.
    let max_ahead = Version { wall_ms: crate::clock::wall_ms() + MAX_CLOCK_OFFSET_MS, logical: 0, writer: 0 };
    ahead.inner.clock.lock().unwrap().observe(max_ahead);

    bind(&ahead, "doc", 10, Consistency::Quorum).await.unwrap();
    let later = bind(&behind, "doc", 20, Consistency::Quorum).await.unwrap();
    let winner = cluster.node(2).resolve_name("doc", Consistency::All).await.unwrap().unwrap();
    assert_eq!(winner.id, later);

    // An unnamed object deleted through the fast clock and put again through the slow
    // one is pinned again: deleting it by id finds it.
    let bytes = object(30);
    let id = ahead.put(body(&bytes), Consistency::Quorum).await.unwrap().id;
    ahead.delete_object(id, Consistency::Quorum).await.unwrap();
    behind.put(body(&bytes), Consistency::Quorum).await.unwrap();
    behind.delete_object(id, Consistency::Quorum).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_write_goes_past_a_newer_version_a_holder_reports_even_with_the_level_met() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let holders = cluster.holders_of_name("doc");
    let coordinator = (0..5).find(|i| !holders.contains(i)).unwrap();
    // A write from a peer whose clock runs ahead failed after reaching one holder, the
    // only one that answers before the quorum is met.
    let ahead = Version { wall_ms: crate::clock::wall_ms() + MAX_CLOCK_OFFSET_MS, logical: 0, writer: 0 };
    let binding = Binding::Object { id: ObjectId::from(blake3::hash(b"lost")), size: 4 };
    let failed = NameRecord { name: "doc".into(), version: ahead, binding };
    cluster.node(holders[0]).store_local(vec![(failed.key(), codec::encode(&failed).into())]).await.unwrap();
    cluster.set_fault(holders[1], Fault::Slow);
    cluster.set_fault(holders[2], Fault::Slow);

    let later = bind(&cluster.node(coordinator), "doc", 20, Consistency::Quorum).await.unwrap();
    let winner = cluster.node(coordinator).resolve_name("doc", Consistency::All).await.unwrap().unwrap();
    assert_eq!(winner.id, later, "the acknowledged write lost to an older failed one");
}

/// A handoff pushes a name record, then deletes its copy. A newer record that arrived
/// in between was deleted with it, on the only peer that had it.
#[tokio::test(start_paused = true)]
async fn handoff_keeps_a_record_that_changed_after_it_was_pushed() {
    let cluster = Arc::new(Cluster::new(5));
    cluster.connect_all();
    let holders = cluster.holders_of_name("doc");
    let leaving = (0..5).find(|i| !holders.contains(i)).unwrap();
    let binding = |bytes: &[u8]| Binding::Object { id: ObjectId::from(blake3::hash(bytes)), size: 1 };
    let record = move |wall_ms, bytes: &[u8]| {
        let record = NameRecord {
            name: "doc".into(),
            version: Version { wall_ms, logical: 0, writer: 9 },
            binding: binding(bytes),
        };
        vec![(record.key(), Bytes::from(codec::encode(&record)))]
    };
    let now = crate::clock::wall_ms();
    cluster.node(leaving).store_local(record(now, b"old")).await.unwrap();
    for &holder in &holders {
        cluster.set_fault(holder, Fault::Slow);
    }
    // The newer record arrives while the pushes of the old one are under way.
    let newer = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SLOW_ANSWER + SLOW_ANSWER / 2).await;
            cluster.node(leaving).store_local(record(now + 1, b"new")).await.unwrap();
        })
    };
    let node = cluster.node(leaving);
    node.hand_off(&node.layout()).await;
    newer.await.unwrap();
    let kept = cluster.records("doc").into_iter().find(|(index, _)| *index == leaving);
    assert_eq!(
        kept.and_then(|(_, record)| record).map(|r| r.version.wall_ms),
        Some(now + 1),
        "the newer record was deleted"
    );

    // The next round hands the newer one over, then lets it go.
    for &holder in &holders {
        cluster.world.faults.lock().unwrap().remove(&cluster.peers[holder]);
    }
    node.hand_off(&node.layout()).await;
    let records = cluster.records("doc");
    assert!(
        records
            .iter()
            .all(|(index, record)| holders.contains(index) && record.as_ref().unwrap().version.wall_ms == now + 1),
        "{records:?}"
    );
}

/// Issue 11, defect 5: one record from the end of time made a name unwritable, and a
/// peer's clock far ahead dragged every coordinator's with it.
#[tokio::test(start_paused = true)]
async fn records_from_far_ahead_are_refused_and_drag_no_clock() {
    let cluster = Cluster::new(4);
    cluster.connect_all();
    bind(&cluster.node(0), "doc", 10, Consistency::All).await.unwrap();
    let holder = cluster.holders_of_name("doc")[0];
    let far = Version { wall_ms: u64::MAX, logical: u32::MAX, writer: 0 };
    let binding = Binding::Object { id: ObjectId::from(blake3::hash(b"forever")), size: 7 };
    let forever = NameRecord { name: "doc".into(), version: far, binding };
    let request = Request::Store { items: vec![(forever.key(), codec::encode(&forever).into())] };
    let answer = cluster.node(holder).handle_request(&cluster.peers[0], request).await;
    assert!(matches!(&answer, Response::Failed(reason) if reason.contains("ahead")), "{answer:?}");

    let later = bind(&cluster.node(1), "doc", 20, Consistency::All).await.unwrap();
    assert_eq!(cluster.node(2).resolve_name("doc", Consistency::All).await.unwrap().unwrap().id, later);

    // One already stored (before clocks were bounded) counts as that holder's failed
    // ack: a QUORUM write goes through the others, and reads skip it.
    cluster.node(holder).inner.store.put(&[(forever.key(), codec::encode(&forever).into())]).unwrap();
    let error = bind(&cluster.node(1), "doc", 30, Consistency::All).await.unwrap_err();
    assert!(error.to_string().contains("ahead"), "{error}");
    let quorum = bind(&cluster.node(1), "doc", 40, Consistency::Quorum).await.unwrap();
    assert_eq!(cluster.node(3).resolve_name("doc", Consistency::Quorum).await.unwrap().unwrap().id, quorum);
    let now = crate::clock::wall_ms();
    for index in 0..4 {
        let version = cluster.node(index).next_version().unwrap();
        assert!(version.wall_ms <= now + MAX_CLOCK_OFFSET_MS, "peer {index}'s clock was dragged to {version}");
    }
}

#[tokio::test(start_paused = true)]
async fn all_names_a_down_replica_and_quorum_catches_it_up_after_it_returns() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let holders = cluster.holders_of_name("doc");
    let down = holders[0];
    let coordinator = (0..5).find(|i| !holders.contains(i)).unwrap();
    bind(&cluster.node(coordinator), "doc", 10, Consistency::All).await.unwrap();
    cluster.kill(down);

    let error = bind(&cluster.node(coordinator), "doc", 20, Consistency::All).await.unwrap_err();
    assert!(matches!(error, NodeError::InsufficientAcks { .. }), "{error}");
    assert!(error.to_string().contains(&cluster.peers[down].to_string()), "does not name the peer: {error}");

    let newer = bind(&cluster.node(coordinator), "doc", 30, Consistency::Quorum).await.unwrap();
    cluster.revive(down);
    cluster.node(down).repair_round().await;
    let (_, record) = cluster.records("doc").into_iter().find(|(i, _)| *i == down).unwrap();
    assert!(
        matches!(record.unwrap().binding, shoal_core::names::Binding::Object { id, .. } if id == newer),
        "the returned replica did not catch up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_name_deleted_while_a_replica_was_down_stays_deleted() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let holders = cluster.holders_of_name("gone");
    let down = holders[1];
    let coordinator = (0..5).find(|i| !holders.contains(i)).unwrap();
    bind(&cluster.node(coordinator), "gone", 10, Consistency::All).await.unwrap();
    cluster.kill(down);
    cluster.node(coordinator).delete_name("gone", Consistency::Quorum).await.unwrap();

    // It returns with the old binding; reads and repair must not bring it back.
    cluster.revive(down);
    for index in 0..5 {
        assert_eq!(cluster.node(index).resolve_name("gone", Consistency::Quorum).await.unwrap(), None);
    }
    for index in 0..5 {
        cluster.node(index).repair_round().await;
    }
    for index in 0..5 {
        assert_eq!(cluster.node(index).resolve_name("gone", Consistency::One).await.unwrap(), None, "peer {index}");
    }
    let records = cluster.records("gone");
    assert!(records.iter().all(|(_, r)| r.as_ref().unwrap().is_tombstone()), "{records:?}");
    assert!(cluster.node(0).list_names("", None, 1000).await.unwrap().names.is_empty());
}

/// From the adversarial review of the failed-put abandon: a node restarted with its clock
/// stepped back (or its store restored from a snapshot) must not issue a version it
/// issued before, or a failed put's abandon could kill the binding of an acknowledged
/// put at that same version.
#[tokio::test(start_paused = true)]
async fn a_restart_with_the_clock_stepped_back_issues_no_version_twice() {
    let store = Arc::new(MemoryStore::created_at(crate::clock::wall_ms()));
    let network = FakeNetwork { me: PeerKey::from_bytes(b"alone"), world: Arc::new(World::default()) };
    let start = |clock_skew_ms| {
        Node::new(NodeConfig { clock_skew_ms, ..NodeConfig::default() }, store.clone(), network.clone()).unwrap()
    };
    let issued = start(0).next_version().unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let after_restart = start(-5_000).next_version().unwrap();
    assert_eq!((after_restart.wall_ms, after_restart.logical), (issued.wall_ms, issued.logical), "the same time");
    assert_ne!(after_restart, issued, "a version issued twice");
}
