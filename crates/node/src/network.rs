//! What the node needs from the network, and nothing more.

use std::future::Future;

use shoal_core::PeerKey;
use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};

/// A failed network call, already described for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// The network as the swarm sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub routing_table_peers: usize,
    pub connected_peers: usize,
}

/// Reaching other peers.
pub trait Network: Clone + Send + Sync + 'static {
    fn local_peer(&self) -> &PeerKey;

    /// The peers a DHT lookup finds closest to `key`, this peer excluded.
    fn closest_peers(&self, key: &[u8]) -> impl Future<Output = Result<Lookup, NetworkError>> + Send;

    fn request(&self, peer: &PeerKey, request: Request) -> impl Future<Output = Result<Response, NetworkError>> + Send;

    fn status(&self) -> impl Future<Output = Result<NetworkStatus, NetworkError>> + Send;
}
