//! Issue 11, defect 7: a listing is complete or says which peers it lacks, and pages of
//! bounded size walk any number of names in order.

use shoal_core::codec;
use shoal_core::names::{Binding, NameRecord, Version};
use shoal_core::wire::LIST_PAGE_MAX;

use super::*;
use crate::NamePage;

fn record(name: &str, wall_ms: u64, binding: Binding) -> NameRecord {
    NameRecord { name: name.to_owned(), version: Version { wall_ms, logical: 0, writer: 1 }, binding }
}

fn bound(id: u8) -> Binding {
    Binding::Object { id: ObjectId([id; 32]), size: u64::from(id) }
}

/// Puts `records` straight into `node`'s store, as if replication had brought them.
async fn hold(node: &TestNode, records: &[NameRecord]) {
    for batch in records.chunks(500) {
        let items = batch.iter().map(|r| (r.key(), Bytes::from(codec::encode(r)))).collect();
        node.store_local(items).await.unwrap();
    }
}

/// Every page from `after` on, as `node` lists them `limit` at a time.
async fn every_page(node: &TestNode, prefix: &str, limit: usize) -> Vec<NamePage> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = node.list_names(prefix, after.as_deref(), limit).await.unwrap();
        assert!(page.names.len() <= limit, "a page of {} names for a limit of {limit}", page.names.len());
        after = page.next.clone();
        pages.push(page);
        if after.is_none() {
            return pages;
        }
    }
}

fn listed(pages: &[NamePage]) -> Vec<(String, ObjectId)> {
    pages.iter().flat_map(|page| page.names.iter().map(|info| (info.name.clone(), info.id))).collect()
}

/// Names spread unevenly over five peers, some deleted or rebound on one peer only: every
/// page size lists each live name once, in order, with its newest binding.
#[tokio::test(start_paused = true)]
async fn pages_merge_the_newest_record_of_every_peer_in_name_order() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    let mut held: Vec<Vec<NameRecord>> = vec![Vec::new(); 5];
    let mut expected = Vec::new();
    for i in 0..300usize {
        let name = format!("docs/{i:04}");
        // On one to three peers, wherever `i` puts it.
        for peer in (0..1 + i % 3).map(|k| (i * 7 + k * 3) % 5) {
            held[peer].push(record(&name, 10, bound(1)));
        }
        let other = (i * 11 + 1) % 5;
        match i % 10 {
            3 => held[other].push(record(&name, 20, Binding::Tombstone)),
            6 => {
                held[other].push(record(&name, 20, bound(2)));
                expected.push((name, ObjectId([2; 32])));
            }
            _ => expected.push((name, ObjectId([1; 32]))),
        }
    }
    held[2].push(record("elsewhere", 10, bound(1)));
    for (peer, records) in held.iter().enumerate() {
        hold(&cluster.node(peer), records).await;
    }

    for limit in [1, 7, 64, LIST_PAGE_MAX] {
        for coordinator in [0, 3] {
            let pages = every_page(&cluster.node(coordinator), "docs/", limit).await;
            assert!(pages.iter().all(NamePage::is_complete));
            assert_eq!(listed(&pages), expected, "pages of {limit} from peer {coordinator}");
        }
    }
    // A page that starts after a cursor lists only what follows it.
    let page = cluster.node(1).list_names("docs/", Some("docs/0289"), 100).await.unwrap();
    let tail: Vec<_> = expected.iter().filter(|(name, _)| name.as_str() > "docs/0289").cloned().collect();
    assert_eq!(listed(&[page]), tail);
}

/// One peer unreachable: the names the others hold are listed, and the page says which
/// peer did not answer instead of passing for complete.
#[tokio::test(start_paused = true)]
async fn a_listing_names_the_peers_that_did_not_answer() {
    let cluster = Cluster::new(5);
    cluster.connect_all();
    for name in ["a", "b", "c"] {
        cluster.node(0).put_named(name, body(&object(10)), Consistency::All).await.unwrap();
    }
    let page = cluster.node(0).list_names("", None, 100).await.unwrap();
    assert!(page.is_complete() && page.names.len() == 3, "{page:?}");

    cluster.set_fault(4, Fault::Down);
    let page = cluster.node(0).list_names("", None, 100).await.unwrap();
    assert_eq!(page.names.len(), 3, "every name has a holder that answered: {page:?}");
    let missing: Vec<&str> = page.unanswered.iter().map(|(peer, _)| peer.as_str()).collect();
    assert_eq!(missing, [cluster.peers[4].to_string()], "{page:?}");
    assert!(page.unanswered[0].1.contains("unreachable"), "{page:?}");
}

/// 100,000 names on three peers: pages of at most [`LIST_PAGE_MAX`] records from each
/// peer, and every name listed once, in order.
#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_names_list_in_bounded_pages() {
    const NAMES: usize = 100_000;
    let cluster = Cluster::new(3);
    cluster.connect_all();
    let records: Vec<NameRecord> = (0..NAMES).map(|i| record(&format!("n/{i:06}"), 10, bound(1))).collect();
    for peer in 0..3 {
        hold(&cluster.node(peer), &records).await;
    }
    let pages = every_page(&cluster.node(1), "", LIST_PAGE_MAX).await;
    assert_eq!(pages.len(), NAMES / LIST_PAGE_MAX);
    let names: Vec<String> = listed(&pages).into_iter().map(|(name, _)| name).collect();
    let expected: Vec<String> = records.into_iter().map(|r| r.name).collect();
    assert!(names == expected, "{} names listed of {NAMES}", names.len());
}
