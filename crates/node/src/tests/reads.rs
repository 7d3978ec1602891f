//! Reads: which holders a get asks, in what order, and what a silent one costs.

use super::*;

/// A holder that takes requests and never answers (a stopped process) costs a read one
/// hedge delay per item: the next holder is asked too and the read completes, and later
/// reads ask it last. Without hedging, every chunk waits on it until the request times out.
#[tokio::test(start_paused = true)]
async fn a_holder_that_never_answers_is_hedged_and_asked_last() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let bytes = object(3 * CHUNK_SIZE + 1);
    let id = cluster.node(0).put(body(&bytes), Consistency::All).await.unwrap().id;
    let holders = closest(&id.0, &cluster.peers, 3);
    let reader = cluster.node((0..5).find(|i| !holders.contains(&cluster.peers[*i])).unwrap());
    // The manifest's closest holder: a reader that measured no one asks it first.
    let silent = cluster.peers.iter().position(|peer| *peer == holders[0]).unwrap();
    cluster.set_fault(silent, Fault::Silent);

    let hedge = NodeConfig::default().read_hedge_after;
    for read in 0..2 {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(600), get_all(&reader, id)).await;
        assert_eq!(got.expect("the read waited for the silent holder").unwrap(), bytes);
        // The first read hedges the manifest and each chunk the silent peer holds;
        // the second asks it after every other holder, so it waits for none of it.
        let waited = started.elapsed();
        match read {
            0 => assert!(waited >= hedge && waited <= hedge * 5, "first read took {waited:?}"),
            _ => assert!(waited < hedge, "second read took {waited:?}: the silent holder was asked first again"),
        }
    }
}
