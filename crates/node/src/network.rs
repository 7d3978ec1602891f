//! What the node needs from the network, and nothing more.

use std::future::Future;

use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};
use shoal_core::{NetworkStatus, PeerKey};

/// A failed network call, already described for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

/// Reaching other peers.
pub trait Network: Clone + Send + Sync + 'static {
    fn local_peer(&self) -> &PeerKey;

    /// The peers a DHT lookup finds closest to `key`, this peer excluded.
    fn closest_peers(&self, key: &[u8]) -> impl Future<Output = Result<Lookup, NetworkError>> + Send;

    fn request(&self, peer: &PeerKey, request: Request) -> impl Future<Output = Result<Response, NetworkError>> + Send;

    fn status(&self) -> impl Future<Output = Result<NetworkStatus, NetworkError>> + Send;
}
