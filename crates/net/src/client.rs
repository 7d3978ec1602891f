//! The cloneable handle to the swarm task.

use libp2p::PeerId;
use shoal_core::PeerKey;
use shoal_core::wire::{Request, Response};
use tokio::sync::{mpsc, oneshot};

/// A transfer request from another peer. Answer it by sending on `reply`; dropping
/// `reply` makes the request fail on the remote side.
#[derive(Debug)]
pub struct InboundRequest {
    pub from: PeerKey,
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// What the network tells the node about other peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A compatible peer (same protocol and replication factor) is connected.
    Up(PeerKey),
    /// The last connection to a peer closed.
    Down(PeerKey),
}

/// What the swarm reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetStatus {
    pub peer_id: String,
    /// Listen addresses, each ending in `/p2p/<peer id>` so it can be used as a bootstrap.
    pub listen_addrs: Vec<String>,
    pub routing_table_peers: usize,
    pub connected_peers: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    /// A request to `peer` failed; callers name the peer themselves.
    #[error("{reason}")]
    Request { peer: PeerKey, reason: String },
    #[error("{0} is not a libp2p peer id")]
    BadPeer(PeerKey),
    #[error("the network task has stopped")]
    Stopped,
}

pub(crate) enum Command {
    ClosestPeers { key: Vec<u8>, reply: oneshot::Sender<Vec<PeerKey>> },
    Request { peer: PeerId, request: Request, reply: oneshot::Sender<Result<Response, String>> },
    Status { reply: oneshot::Sender<NetStatus> },
}

/// Talks to the swarm task. Cheap to clone; the task stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer: PeerKey,
}

impl Client {
    pub(crate) fn new(commands: mpsc::Sender<Command>, local_peer: PeerKey) -> Self {
        Self { commands, local_peer }
    }

    pub fn local_peer(&self) -> &PeerKey {
        &self.local_peer
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| NetError::Stopped)?;
        answer.await.map_err(|_| NetError::Stopped)
    }

    /// The peers a Kademlia lookup finds closest to `key` (up to kad's bucket size, 20),
    /// closest first. Only peers that answered the lookup are listed; this peer is not.
    pub async fn closest_peers(&self, key: &[u8]) -> Result<Vec<PeerKey>, NetError> {
        let key = key.to_vec();
        self.call(|reply| Command::ClosestPeers { key, reply }).await
    }

    /// Sends one transfer request and waits for the answer (bounded by the request timeout).
    pub async fn request(&self, peer: &PeerKey, request: Request) -> Result<Response, NetError> {
        let peer_id = PeerId::from_bytes(peer.as_bytes()).map_err(|_| NetError::BadPeer(peer.clone()))?;
        self.call(|reply| Command::Request { peer: peer_id, request, reply })
            .await?
            .map_err(|reason| NetError::Request { peer: peer.clone(), reason })
    }

    pub async fn status(&self) -> Result<NetStatus, NetError> {
        self.call(|reply| Command::Status { reply }).await
    }
}
