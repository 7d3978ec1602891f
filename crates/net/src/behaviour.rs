//! The composed network behaviour.

use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify, identity::Keypair, kad, ping, request_response};

use crate::codec::TransferCodec;
use crate::{KAD_PROTOCOL, NetConfig, TRANSFER_PROTOCOL};

/// Transfer streams open at once on one connection. Each may buffer one frame (up to
/// `codec::MAX_MESSAGE_BYTES`), within the budget all inbound requests share.
pub(crate) const MAX_STREAMS_PER_CONNECTION: usize = 64;

/// Connections to one peer at once: two dialing each other at the same moment make two.
const MAX_CONNECTIONS_PER_PEER: u32 = 2;

/// Inbound connections still in their handshake at once.
const MAX_PENDING_INCOMING: u32 = 64;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so a connection past the limits is refused before any other behaviour
    /// spends anything on it.
    pub limits: connection_limits::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub transfer: request_response::Behaviour<TransferCodec>,
}

impl Behaviour {
    pub fn new(keypair: &Keypair, config: &NetConfig) -> Self {
        let peer_id = keypair.public().to_peer_id();
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        // Object bytes never travel in kad records: kad is only the routing layer, so its
        // record replication and publication stay off.
        kad_config
            .set_record_ttl(None)
            .set_replication_interval(None)
            .set_publication_interval(None)
            .set_provider_publication_interval(None)
            .set_periodic_bootstrap_interval(Some(std::time::Duration::from_secs(60)))
            // Only peers identify proved compatible enter the routing table (the event
            // loop adds them), so our lookup answers never lead another Shoal peer to a
            // peer that must not hold data, whatever kad protocols it speaks.
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            // Placement relies on it: fewer results than this means the lookup saw everyone.
            .set_replication_factor(
                std::num::NonZeroUsize::new(shoal_core::placement::LOOKUP_PEERS_MAX).expect("non-zero"),
            );
        // In an open network anyone may answer a lookup: disjoint paths keep one liar on
        // the way from steering where a lookup ends (S/Kademlia).
        if config.network_key.is_none() {
            kad_config.disjoint_query_paths(true);
        }
        let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        // Set explicitly: without a confirmed external address kad would stay a client and
        // other peers could not look anything up through us.
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(
            identify::Config::new(config.announcement.to_string(), keypair.public())
                .with_agent_version(format!("shoald/{}", env!("CARGO_PKG_VERSION")))
                // A peer given its external addresses announces only those: listen
                // addresses such as 127.0.0.1 would send other hosts to themselves.
                .with_hide_listen_addrs(!config.external.is_empty()),
        );
        let transfer = request_response::Behaviour::with_codec(
            TransferCodec::new(config.inbound_request_bytes),
            [(StreamProtocol::new(TRANSFER_PROTOCOL), request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
        );
        let limits = connection_limits::Behaviour::new(
            ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_established_incoming(Some(config.max_inbound_connections))
                .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
        );
        Self { limits, kad, identify, ping: ping::Behaviour::default(), transfer }
    }
}
