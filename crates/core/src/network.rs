//! What the network layer reports about itself to the layers above it.

use serde::{Deserialize, Serialize};

/// The network as the swarm sees it: one definition from the swarm to the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub peer_id: String,
    /// Listen addresses, each ending in `/p2p/<peer id>` so it can be used as a bootstrap.
    pub listen_addrs: Vec<String>,
    /// What other peers are told to dial, in the same form: the external addresses when
    /// the peer was given any, else its listen addresses.
    pub announced_addrs: Vec<String>,
    pub routing_table_peers: usize,
    pub peers_connected: usize,
    /// The fingerprint of the private network's key; `None` for an open network.
    pub network_key: Option<String>,
    /// Connections that failed in their handshake, most often for want of the same
    /// network key on both sides.
    pub handshakes_failed: u64,
}
