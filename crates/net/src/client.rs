//! The cloneable handle to the swarm task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};
use shoal_core::{NetworkStatus, PeerKey};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::behaviour::MAX_STREAMS_PER_CONNECTION;

/// Requests this peer sends one peer at once: half the streams a connection allows, the
/// other half left for that peer's requests to us.
const REQUESTS_PER_PEER_MAX: usize = MAX_STREAMS_PER_CONNECTION / 2;

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
    /// A compatible peer (same protocol and network settings) is connected; it has held
    /// copies since `holding_since_ms`.
    Up { peer: PeerKey, holding_since_ms: u64 },
    /// The last connection to a peer closed.
    Down(PeerKey),
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("bad {what} address {addr:?}: {reason}")]
    BadAddress { what: &'static str, addr: String, reason: String },
    /// A request to `peer` failed; callers name the peer themselves.
    #[error("{reason}")]
    Request { peer: PeerKey, reason: String },
    #[error("{0} is not a libp2p peer id")]
    BadPeer(PeerKey),
    #[error("the network task has stopped")]
    Stopped,
}

pub(crate) enum Command {
    ClosestPeers { key: Vec<u8>, reply: oneshot::Sender<Lookup> },
    Request { peer: PeerId, request: Request, reply: oneshot::Sender<Result<Response, String>> },
    Status { reply: oneshot::Sender<NetworkStatus> },
}

/// Talks to the swarm task. Cheap to clone; the task stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer: PeerKey,
    /// Requests in flight to each peer: request-response fails new streams beyond its
    /// per-connection limit instead of queueing them, so callers queue here.
    in_flight: Arc<Mutex<HashMap<PeerId, Arc<Semaphore>>>>,
}

impl Client {
    pub(crate) fn new(commands: mpsc::Sender<Command>, local_peer: PeerKey) -> Self {
        Self { commands, local_peer, in_flight: Arc::default() }
    }

    fn slots(&self, peer: PeerId) -> Arc<Semaphore> {
        let mut in_flight = self.in_flight.lock().expect("never poisoned");
        in_flight.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(REQUESTS_PER_PEER_MAX))).clone()
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
    /// closest first, and whether it ran to its end. Only peers that answered the lookup
    /// are listed; this peer is not.
    pub async fn closest_peers(&self, key: &[u8]) -> Result<Lookup, NetError> {
        let key = key.to_vec();
        self.call(|reply| Command::ClosestPeers { key, reply }).await
    }

    /// Sends one transfer request and waits for the answer (bounded by the request timeout).
    pub async fn request(&self, peer: &PeerKey, request: Request) -> Result<Response, NetError> {
        let peer_id = PeerId::from_bytes(peer.as_bytes()).map_err(|_| NetError::BadPeer(peer.clone()))?;
        let _slot = self.slots(peer_id).acquire_owned().await.expect("never closed");
        self.call(|reply| Command::Request { peer: peer_id, request, reply })
            .await?
            .map_err(|reason| NetError::Request { peer: peer.clone(), reason })
    }

    pub async fn status(&self) -> Result<NetworkStatus, NetError> {
        self.call(|reply| Command::Status { reply }).await
    }
}
