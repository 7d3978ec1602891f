//! Issue 11, defect 4: reads while a holder set changes. A peer that arrives is a holder
//! at once and has nothing until handoff brings it; the peers it displaced still do.

use super::*;

/// Right after six peers join three, most items belong to peers that hold nothing yet.
/// Every coordinator, old or new, still finds every object, a QUORUM read still sees the
/// binding a quorum of the old holders acknowledged, and 404 is answered only for what
/// nobody holds.
#[tokio::test(start_paused = true)]
async fn reads_find_what_handoff_has_not_moved_yet() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let objects = put_six_objects(&cluster).await;
    let named = object(3 * CHUNK_SIZE);
    let (receipt, _) = cluster.node(0).put_named("n", body(&named), Consistency::Quorum).await.unwrap();

    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..6 {
        cluster.add_peer();
    }
    cluster.connect_all();

    // No repair round has run: nothing has moved.
    for index in 0..9 {
        let node = cluster.node(index);
        for (id, bytes) in &objects {
            assert_eq!(&get_all(&node, *id).await.unwrap(), bytes, "object {id} from peer {index}");
        }
        let resolved = node.resolve_name("n", Consistency::Quorum).await.unwrap();
        assert_eq!(resolved.map(|info| info.id), Some(receipt.id), "name from peer {index}");
        let missing = ObjectId::from(blake3::hash(b"never stored"));
        assert!(matches!(node.manifest(missing).await, Err(NodeError::NotFound(_))), "peer {index}");
    }
}

/// Past the move window the displaced holders are no longer asked, once handoff has
/// moved everything to the holders of the grown network.
#[tokio::test(start_paused = true)]
async fn after_the_move_window_reads_ask_the_current_holders_only() {
    let mut cluster = Cluster::new(3);
    cluster.connect_all();
    let bytes = object(2 * CHUNK_SIZE);
    let id = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap().id;
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..6 {
        cluster.add_peer();
    }
    cluster.connect_all();
    for index in 0..9 {
        cluster.node(index).repair_round().await;
    }
    tokio::time::advance(NodeConfig::default().move_window).await;
    let node = cluster.node(8);
    let key = ItemKey::manifest(id);
    let replicas = node.placement(&key).await.unwrap();
    assert_eq!(replicas.everyone(), replicas.current(), "one holder set once the window has passed");
    assert_eq!(&get_all(&node, id).await.unwrap(), &bytes);
}
