//! Shoal's libp2p swarm: Kademlia (our own protocol name, server mode, no record
//! publication), identify, ping and the item transfer protocol.
//!
//! One task ([`event_loop`]) owns the `Swarm`. Everything else holds a cloneable
//! [`Client`] that sends commands over a bounded channel and awaits oneshot replies, the
//! shape of rust-libp2p's `file-sharing` example. Inbound transfer requests leave the loop
//! as [`InboundRequest`]s on a bounded channel; whoever answers them (the node) does its
//! disk work elsewhere, never inside the loop.
//!
//! Architecture invariant: this is the only crate that names libp2p. Its interface speaks
//! `shoal_core` types (`PeerKey`, `wire::Request`, `wire::Response`) so nothing above it
//! learns libp2p's.

mod behaviour;
mod client;
mod codec;
mod event_loop;
mod identity;
mod network_key;
mod subnets;
mod transport;

use std::time::Duration;

use shoal_core::settings::Announcement;

pub use client::{Client, InboundRequest, NetError, PeerEvent};
pub use codec::TransferCodec;
pub use identity::{Identity, IdentityError, load_or_create_identity};
pub use network_key::{NetworkKey, NetworkKeyError};
pub use subnets::SubnetLimit;

/// Kademlia protocol name: Shoal peers form their own DHT, apart from IPFS's.
pub const KAD_PROTOCOL: &str = "/shoal/kad/1.0.0";
/// The item transfer protocol.
pub const TRANSFER_PROTOCOL: &str = "/shoal/transfer/9";

/// Default of [`NetConfig::max_inbound_connections`].
pub const MAX_INBOUND_CONNECTIONS: u32 = 512;

/// Everything the swarm needs to start.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub identity: Identity,
    /// Multiaddrs to listen on, and of peers to join through.
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    /// Addresses other peers dial to reach this one, for a peer whose listen addresses
    /// are not (`0.0.0.0`, or behind a NAT). When set, only these are announced: identify's
    /// observed addresses are never trusted on their own.
    pub external: Vec<String>,
    /// The settings every peer of the network shares, and since when this peer holds
    /// copies. Peers announce both (identify) and hold data only with peers that announce
    /// the same settings, so two networks with different R or grace periods never
    /// silently mix.
    pub announcement: Announcement,
    /// Deadline for one transfer request, both ways.
    pub request_timeout: Duration,
    /// Inbound requests queued for the node before new ones are refused as busy.
    pub inbound_queue_len: usize,
    /// Bytes that inbound requests, queued or being answered, may hold together (at
    /// least one message, 8 MiB).
    pub inbound_request_bytes: usize,
    /// Connections other peers may have open to this one; more are refused.
    pub max_inbound_connections: u32,
    /// The private network's key; without one the network is open to any libp2p peer.
    pub network_key: Option<NetworkKey>,
    /// Most peers of one subnet that may hold data (see [`SubnetLimit`]); `None` for no
    /// bound, as in a private network, whose peers all hold its key.
    pub subnet_limit: Option<SubnetLimit>,
}

impl NetConfig {
    pub fn new(identity: Identity, announcement: Announcement) -> Self {
        Self {
            identity,
            listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            bootstrap: Vec::new(),
            external: Vec::new(),
            announcement,
            request_timeout: Duration::from_secs(30),
            inbound_queue_len: 256,
            inbound_request_bytes: 256 << 20,
            max_inbound_connections: MAX_INBOUND_CONNECTIONS,
            network_key: None,
            subnet_limit: None,
        }
    }
}

/// What [`start`] hands back: the handle, and the streams of what other peers do.
#[derive(Debug)]
pub struct Network {
    pub client: Client,
    pub inbound: tokio::sync::mpsc::Receiver<InboundRequest>,
    pub peer_events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
}

/// Starts the swarm: binds every listen address, dials the bootstrap peers and spawns the
/// event loop. Returns once the listeners are bound, so [`Client::status`] already
/// reports real ports.
pub async fn start(config: NetConfig) -> Result<Network, NetError> {
    event_loop::start(config).await
}

#[cfg(test)]
mod placement_agrees_with_kad {
    //! Placement and kad must rank peers identically, or writes would go to peers that
    //! lookups never find.

    use libp2p::PeerId;
    use libp2p::kad::KBucketKey;
    use proptest::prelude::*;
    use shoal_core::PeerKey;
    use shoal_core::placement::{KeyHash, closest};

    proptest! {
        #[test]
        fn same_hashes_and_same_order(key: [u8; 32], count in 1usize..30) {
            let peers: Vec<PeerId> = (0..count).map(|_| PeerId::random()).collect();
            let kad_target = KBucketKey::from(key.to_vec());
            let ours = KeyHash::of(&key);
            prop_assert_eq!(kad_target.hashed_bytes(), ours.as_bytes().as_slice());

            let mut by_kad = peers.clone();
            by_kad.sort_by_key(|p| KBucketKey::from(*p).distance(&kad_target));
            let keys: Vec<PeerKey> = peers.iter().map(|p| PeerKey::from_bytes(&p.to_bytes())).collect();
            let by_placement = closest(&key, &keys, count);
            let by_kad: Vec<PeerKey> = by_kad.iter().map(|p| PeerKey::from_bytes(&p.to_bytes())).collect();
            prop_assert_eq!(by_placement, by_kad);
        }
    }
}
