//! The node's view of the libp2p network.

use shoal_core::NetworkStatus;
use shoal_core::PeerKey;
use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};
use shoal_node::{Network, NetworkError};

#[derive(Debug, Clone)]
pub struct Libp2pNetwork(pub shoal_net::Client);

fn describe(error: shoal_net::NetError) -> NetworkError {
    NetworkError(error.to_string())
}

impl Network for Libp2pNetwork {
    fn local_peer(&self) -> &PeerKey {
        self.0.local_peer()
    }

    async fn closest_peers(&self, key: &[u8]) -> Result<Lookup, NetworkError> {
        self.0.closest_peers(key).await.map_err(describe)
    }

    async fn request(&self, peer: &PeerKey, request: Request) -> Result<Response, NetworkError> {
        self.0.request(peer, request).await.map_err(describe)
    }

    async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        self.0.status().await.map_err(describe)
    }
}
