//! Shoal serves lookups to anyone and data only to its own kind. A standard libp2p
//! Kademlia client (another identify version, kad in client mode, speaking
//! `/shoal/kad/1.0.0`) finds every Shoal peer through one of them and is never given an
//! item; a Shoal peer with another replication factor or grace period stays connected but
//! holds nothing, whoever dialed. A foreign peer that speaks Shoal's transfer protocol is
//! answered no item, before its identify arrives or after. A peer at its inbound
//! connection limit refuses the next one.
//! This file plays the foreign implementation, so it alone among the daemon's tests
//! names libp2p.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Peer, assert_every_item_on_its_r_closest, pseudo_random, start_network, start_peer, start_peer_with, stop_all,
    wait_for_one_network,
};
use futures::{StreamExt, stream};
use libp2p::kad::{self, QueryResult, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, identify, noise, ping, tcp, yamux};
use shoal_core::codec::MAX_MESSAGE_BYTES;
use shoal_core::wire::{Request, Response};
use shoal_core::{Consistency, ItemKey};
use shoal_net::{TRANSFER_PROTOCOL, TransferCodec};

#[derive(NetworkBehaviour)]
struct Foreign {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn foreign_client() -> Swarm<Foreign> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let config = kad::Config::new(StreamProtocol::new("/shoal/kad/1.0.0"));
            let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
            kad.set_mode(Some(kad::Mode::Client));
            let identify = identify::Behaviour::new(identify::Config::new("/foreign-dht/1.0.0".into(), key.public()));
            Foreign { kad, identify, ping: ping::Behaviour::default() }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

fn peer_id(peer: &Peer) -> PeerId {
    peer.daemon.peer_id.parse().unwrap()
}

/// A peer's first listen address without its `/p2p/` suffix, as kad reports addresses.
fn listen_addr(peer: &Peer) -> Multiaddr {
    let mut addr: Multiaddr = peer.daemon.p2p_addrs[0].parse().unwrap();
    addr.pop();
    addr
}

/// Puts `count` small objects at ALL through `peer`: each succeeds only if every one of
/// its R placed peers stored it, so none can have been placed on a peer that cannot.
async fn put_at_all(peer: &Peer, count: usize) {
    for n in 0..count {
        let bytes = pseudo_random(1024, &format!("object {n}"));
        let body = stream::iter([Ok::<_, std::io::Error>(bytes)]);
        let receipt = peer.client.put(body, Some(Consistency::All)).await.unwrap();
        assert_eq!(receipt.acks, 3);
    }
}

async fn routing_tables(peers: &[Peer]) -> Vec<usize> {
    let mut sizes = Vec::new();
    for peer in peers {
        sizes.push(peer.client.status().await.unwrap().network.routing_table_peers);
    }
    sizes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_kademlia_client_finds_every_peer_and_is_given_nothing() {
    let peers = start_network(4).await;
    let mut foreign = foreign_client();
    let entry = peer_id(&peers[0]);
    foreign.behaviour_mut().kad.add_address(&entry, listen_addr(&peers[0]));

    let query = foreign.behaviour_mut().kad.get_closest_peers(PeerId::random());
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let SwarmEvent::Behaviour(ForeignEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::GetClosestPeers(result),
                step,
                ..
            })) = foreign.select_next_some().await
                && id == query
                && step.last
            {
                return result.expect("the lookup succeeds").peers;
            }
        }
    })
    .await
    .expect("the lookup ends within 30 s");

    // Only peers that answered FIND_NODE are listed, so each was dialed at an address
    // another Shoal peer handed out.
    let found_ids: BTreeSet<PeerId> = found.iter().map(|p| p.peer_id).collect();
    assert_eq!(found_ids, peers.iter().map(peer_id).collect(), "every Shoal peer and nothing else");
    for peer in &peers[1..] {
        let info = found.iter().find(|p| p.peer_id == peer_id(peer)).unwrap();
        let bare = |addr: &Multiaddr| addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect::<Multiaddr>();
        assert!(
            info.addrs.iter().map(bare).any(|a| a == listen_addr(peer)),
            "{:?} lacks {}",
            info.addrs,
            listen_addr(peer)
        );
    }

    // Keep the foreign client connected and answering pings while data is placed.
    let connected = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } = foreign.select_next_some().await
                && peer_id == entry
            {
                return;
            }
        }
    });
    put_at_all(&peers[0], 12).await;
    assert_eq!(assert_every_item_on_its_r_closest(&peers, 3).await, 12);
    assert_eq!(routing_tables(&peers).await, [3; 4], "the client is in no routing table");
    assert!(!connected.is_finished(), "the entry peer kept the foreign client connected");
    connected.abort();
    stop_all(peers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_other_network_settings_hold_nothing() {
    let mut peers = start_network(4).await;
    let everyone: Vec<String> = peers.iter().map(|p| p.daemon.p2p_addrs[0].clone()).collect();
    let other_r = start_peer_with(everyone.clone(), |c| c.replication_factor = 2).await;
    let other_grace = start_peer_with(everyone, |c| c.gc_grace_ms *= 2).await;
    let others = [other_r, other_grace];
    // One more Shoal peer dials them itself: the rule holds whoever dialed.
    let mut through_others: Vec<String> = others.iter().map(|o| o.daemon.p2p_addrs[0].clone()).collect();
    through_others.push(peers[0].daemon.p2p_addrs[0].clone());
    peers.push(start_peer(through_others).await);
    wait_for_one_network(&peers).await;

    // They connect to every peer, and each keeps them out of its routing table and view.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for other in &others {
        while other.client.status().await.unwrap().network.peers_connected < peers.len() {
            assert!(tokio::time::Instant::now() < deadline, "another peer did not reach every peer in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    put_at_all(&peers[0], 12).await;
    assert_eq!(assert_every_item_on_its_r_closest(&peers, 3).await, 12);
    for other in &others {
        assert!(other.client.local_items().await.unwrap().is_empty(), "a peer of other settings holds nothing");
    }
    assert_eq!(routing_tables(&peers).await, [4; 5]);
    assert_eq!(routing_tables(&others).await, [0, 0]);
    stop_all(peers).await;
    stop_all(others.into()).await;
}

/// Whether `peer` let a foreign client in: it identified itself to the client, or the
/// connection ended first. An admitted client is left running, so it stays connected.
async fn dial_in(peer: &Peer) -> bool {
    let mut client = foreign_client();
    client.dial(peer.daemon.p2p_addrs[0].parse::<Multiaddr>().unwrap()).unwrap();
    let admitted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(ForeignEvent::Identify(identify::Event::Received { .. })) => return true,
                SwarmEvent::ConnectionClosed { .. } | SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .expect("the peer admits or refuses within 30 s");
    if admitted {
        tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        });
    }
    admitted
}

/// Issue 11, defect 8: connections are a bounded resource. Past its limit a peer turns
/// the next connection away instead of spending memory and descriptors on it, and it
/// keeps serving the ones it admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_its_connection_limit_turns_the_next_one_away() {
    let peer = start_peer_with(vec![], |c| c.max_inbound_connections = 2).await;
    assert!(dial_in(&peer).await, "the first connection is admitted");
    assert!(dial_in(&peer).await, "the second connection is admitted");
    assert!(!dial_in(&peer).await, "the third connection is refused");
    assert_eq!(peer.client.status().await.unwrap().network.peers_connected, 2, "the admitted two stay");
    stop_all(vec![peer]).await;
}

/// A foreign peer that speaks `/shoal/transfer/9` itself, with identify or without it,
/// and no ping: a peer that does not speak ping is not taken for a dead connection.
#[derive(NetworkBehaviour)]
struct Requester {
    identify: Toggle<identify::Behaviour>,
    transfer: request_response::Behaviour<TransferCodec>,
}

fn requester(identifies: bool) -> Swarm<Requester> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            let identify = identifies
                .then(|| identify::Behaviour::new(identify::Config::new("/foreign-dht/1.0.0".into(), key.public())));
            let protocols = [(StreamProtocol::new(TRANSFER_PROTOCOL), ProtocolSupport::Outbound)];
            let config = request_response::Config::default().with_request_timeout(Duration::from_secs(5));
            let codec = TransferCodec::new(MAX_MESSAGE_BYTES);
            Requester {
                identify: identify.into(),
                transfer: request_response::Behaviour::with_codec(codec, protocols, config),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

/// Sends `count` copies of `request` to `peer` as soon as the connection is up, so they
/// arrive with identify still under way, and returns each answer or why it has none.
async fn ask(
    client: &mut Swarm<Requester>,
    peer: &Peer,
    request: &Request,
    count: usize,
) -> Vec<Result<Response, String>> {
    let target = peer_id(peer);
    client.add_peer_address(target, listen_addr(peer));
    let sent: Vec<OutboundRequestId> =
        (0..count).map(|_| client.behaviour_mut().transfer.send_request(&target, request.clone())).collect();
    let mut answers = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while answers.len() < count {
            use request_response::{Event, Message};
            match client.select_next_some().await {
                SwarmEvent::Behaviour(RequesterEvent::Transfer(Event::Message {
                    message: Message::Response { request_id, response },
                    ..
                })) => answers.insert(request_id, Ok(response)),
                SwarmEvent::Behaviour(RequesterEvent::Transfer(Event::OutboundFailure {
                    request_id, error, ..
                })) => answers.insert(request_id, Err(error.to_string())),
                _ => None,
            };
        }
    })
    .await
    .expect("every request is answered or fails within 30 s");
    sent.iter().map(|id| answers.remove(id).unwrap()).collect()
}

fn is_item(answer: &Result<Response, String>) -> bool {
    matches!(answer, Ok(Response::Item(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_peer_speaking_the_transfer_protocol_is_given_no_item() {
    let peers = start_network(4).await;
    let receipt = peers[0].client.put(common::body(pseudo_random(1024, "asked for")), Some(Consistency::All)).await;
    let fetch = Request::Fetch { key: ItemKey::manifest(receipt.unwrap().id) };

    // Three of the four hold the manifest; none gives it, whether the request came before
    // identify told them who asks or after.
    for peer in &peers {
        let mut client = requester(true);
        let first = ask(&mut client, peer, &fetch, 1).await;
        let second = ask(&mut client, peer, &fetch, 1).await;
        for answer in first.iter().chain(&second) {
            assert!(
                matches!(answer, Ok(Response::Failed(why)) if why.contains("holds no data with you")),
                "a foreign peer was answered {answer:?}"
            );
        }
    }

    // Without identify, requests wait for it (16 at most, then "busy") until the asker's
    // timeout ends them: none is ever answered with an item.
    let mut silent = requester(false);
    let answers = ask(&mut silent, &peers[0], &fetch, 20).await;
    assert!(!answers.iter().any(is_item), "a peer that never identified itself was given an item");
    let busy = answers.iter().filter(|a| matches!(a, Ok(Response::Failed(why)) if why.contains("busy"))).count();
    assert_eq!(busy, 4, "requests beyond the 16 waiting for identify are turned away at once: {answers:?}");
    assert!(answers.iter().filter(|a| a.is_err()).count() == 16, "the waiting ones time out: {answers:?}");

    assert_eq!(assert_every_item_on_its_r_closest(&peers, 3).await, 1, "the object stays where it was placed");
    stop_all(peers).await;
}
