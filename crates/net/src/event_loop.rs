//! The task that owns the `Swarm`.
//!
//! It only routes: commands from [`Client`]s become swarm calls, swarm events become
//! replies or [`InboundRequest`]s. It never touches the disk and never waits on anything
//! but its own channels, so a slow store cannot stall the network.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{DialError, ListenError, SwarmEvent, dial_opts::DialOpts};
use libp2p::{Multiaddr, PeerId, Swarm, TransportError, identify};
use shoal_core::PeerKey;
use shoal_core::placement::Lookup;
use shoal_core::settings::Announcement;
use shoal_core::wire::{Request, Response};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent};
use shoal_core::NetworkStatus;

use crate::client::{Client, Command, InboundRequest, NetError, PeerEvent};
use crate::subnets::Subnets;
use crate::{NetConfig, Network, NetworkKey, transport};

/// A closed connection starts failure detection's grace period, so connections must not
/// idle out between the node's regular exchanges (anti-entropy rounds, at most a few
/// minutes apart).
const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Transfer requests held per peer until its identify arrives (see `awaiting_identify`).
const AWAITING_IDENTIFY_MAX: usize = 16;

/// Commands queued from clients before senders wait.
const COMMAND_QUEUE_LEN: usize = 1024;
/// How often a peer connected to no compatible peer dials its bootstrap peers again.
const BOOTSTRAP_REDIAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Failed handshakes are logged at most this often; each is counted in the status.
const HANDSHAKE_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

type PendingResponse = BoxFuture<'static, (ResponseChannel<Response>, Option<Response>)>;

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<InboundRequest>,
    /// Unbounded but small: one event per connection change of a peer.
    peer_events: mpsc::UnboundedSender<PeerEvent>,
    /// Peers that passed the compatibility check and have a connection open.
    compatible: HashSet<PeerId>,
    /// Peers that failed it. They may still use kad, identify and ping, but they are never
    /// in the routing table, never handed out by lookups and never answered a transfer
    /// request, so no data is placed on them or sent to them.
    refused: HashSet<PeerId>,
    /// Where each connected peer was reached, and how many of each subnet hold data.
    remote_addrs: HashMap<PeerId, Multiaddr>,
    subnets: Subnets,
    /// Transfer requests from peers whose identify has not arrived yet: answered once it
    /// proves them compatible, refused otherwise, dropped if they disconnect first. At
    /// most `AWAITING_IDENTIFY_MAX` per peer; beyond that, and for a peer that never
    /// identifies itself, the requester's timeout ends them.
    awaiting_identify: HashMap<PeerId, Vec<(Request, ResponseChannel<Response>)>>,
    announcement: Announcement,
    pending_lookups: HashMap<QueryId, oneshot::Sender<Lookup>>,
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, String>>>,
    /// Inbound requests the node is answering; their response channels wait here.
    pending_responses: FuturesUnordered<PendingResponse>,
    listen_addrs: Vec<Multiaddr>,
    connected: HashSet<PeerId>,
    bootstrapped: bool,
    bootstrap: Vec<Multiaddr>,
    /// Ticks while this peer is connected to no compatible peer: then it dials its
    /// bootstrap peers again.
    redial: tokio::time::Interval,
    network_key: Option<NetworkKey>,
    /// Connections whose TCP connection was up but whose handshake failed.
    handshakes_failed: u64,
    last_handshake_warning: Option<tokio::time::Instant>,
}

fn peer_key(peer: &PeerId) -> PeerKey {
    PeerKey::from_bytes(&peer.to_bytes())
}

fn parse_addrs(addrs: &[String], what: &'static str) -> Result<Vec<Multiaddr>, NetError> {
    let parse = |addr: &String| {
        addr.parse().map_err(|e: libp2p::multiaddr::Error| NetError::BadAddress {
            what,
            addr: addr.clone(),
            reason: e.to_string(),
        })
    };
    addrs.iter().map(parse).collect()
}

pub(crate) async fn start(config: NetConfig) -> Result<Network, NetError> {
    let keypair = config.identity.0.clone();
    let listen = parse_addrs(&config.listen, "listen")?;
    let bootstrap = parse_addrs(&config.bootstrap, "bootstrap")?;
    let external = parse_addrs(&config.external, "external")?;
    let local_peer = keypair.public().to_peer_id();
    let transport = transport::build(&keypair, config.network_key)
        .map_err(|e| NetError::Listen { addr: "tcp".into(), reason: e.to_string() })?;
    // Not SwarmBuilder: it wraps the transport's errors in layers of its own, and the
    // event loop must tell a failed handshake from a refused connection.
    let swarm_config =
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    let mut swarm = Swarm::new(transport, Behaviour::new(&keypair, &config), local_peer, swarm_config);

    let listen_addrs = listen_all(&mut swarm, &listen).await?;
    for addr in external {
        swarm.add_external_address(addr);
    }
    for addr in &bootstrap {
        dial_bootstrap(&mut swarm, addr);
    }
    // A peer that reached none of its bootstrap peers (they started later, or a partition
    // stood between) would otherwise stay alone until someone dialed it.
    let mut redial = tokio::time::interval_at(tokio::time::Instant::now() + BOOTSTRAP_REDIAL, BOOTSTRAP_REDIAL);
    redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let (command_tx, commands) = mpsc::channel(COMMAND_QUEUE_LEN);
    let (inbound, inbound_rx) = mpsc::channel(config.inbound_queue_len);
    let (peer_events, peer_events_rx) = mpsc::unbounded_channel();
    let event_loop = EventLoop {
        swarm,
        commands,
        inbound,
        peer_events,
        compatible: HashSet::new(),
        refused: HashSet::new(),
        remote_addrs: HashMap::new(),
        subnets: Subnets::new(config.subnet_limit),
        awaiting_identify: HashMap::new(),
        announcement: config.announcement,
        pending_lookups: HashMap::new(),
        pending_requests: HashMap::new(),
        pending_responses: FuturesUnordered::new(),
        listen_addrs,
        connected: HashSet::new(),
        bootstrapped: false,
        bootstrap,
        redial,
        network_key: config.network_key,
        handshakes_failed: 0,
        last_handshake_warning: None,
    };
    tokio::spawn(event_loop.run());
    Ok(Network {
        client: Client::new(command_tx, peer_key(&local_peer)),
        inbound: inbound_rx,
        peer_events: peer_events_rx,
    })
}

/// Binds every address and waits until each listener reports the address it got, so
/// port 0 is resolved before anyone asks.
async fn listen_all(swarm: &mut Swarm<Behaviour>, addrs: &[Multiaddr]) -> Result<Vec<Multiaddr>, NetError> {
    let mut waiting = HashMap::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen { addr: addr.to_string(), reason: e.to_string() })?;
        waiting.insert(id, addr.clone());
    }
    let mut bound = Vec::new();
    while !waiting.is_empty() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                waiting.remove(&listener_id);
                bound.push(address);
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                let addr = waiting.remove(&listener_id).map(|a| a.to_string()).unwrap_or_default();
                let reason = reason.err().map(|e| e.to_string()).unwrap_or_else(|| "closed".into());
                return Err(NetError::Listen { addr, reason });
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                let addr = waiting.remove(&listener_id).map(|a| a.to_string()).unwrap_or_default();
                return Err(NetError::Listen { addr, reason: error.to_string() });
            }
            _ => {}
        }
    }
    Ok(bound)
}

/// Dials a bootstrap address. With a `/p2p/<id>` suffix the peer also goes straight into
/// the routing table; without one it gets there once identify tells us who it is.
fn dial_bootstrap(swarm: &mut Swarm<Behaviour>, addr: &Multiaddr) {
    if let Some(Protocol::P2p(peer)) = addr.iter().last() {
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
    }
    if let Err(e) = swarm.dial(DialOpts::unknown_peer_id().address(addr.clone()).build()) {
        warn!(%addr, "cannot dial bootstrap peer: {e}");
    }
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                // Local work before new remote work: finish answers first, then commands.
                biased;
                Some((channel, response)) = self.pending_responses.next(), if !self.pending_responses.is_empty() => {
                    if let Some(response) = response {
                        // Fails only if the remote gave up; it has seen the failure already.
                        let _ = self.swarm.behaviour_mut().transfer.send_response(channel, response);
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        debug!("every client is gone; network task stops");
                        return;
                    }
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = self.redial.tick() => {
                    if !self.connected.iter().any(|peer| self.compatible.contains(peer)) {
                        for addr in &self.bootstrap {
                            dial_bootstrap(&mut self.swarm, addr);
                        }
                    }
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ClosestPeers { key, reply } => {
                let query = self.swarm.behaviour_mut().kad.get_closest_peers(key);
                self.pending_lookups.insert(query, reply);
            }
            Command::Request { peer, request, reply } if self.refused.contains(&peer) => {
                drop(request);
                let _ = reply.send(Err(format!("{peer} holds no data with this peer")));
            }
            Command::Request { peer, request, reply } => {
                let id = self.swarm.behaviour_mut().transfer.send_request(&peer, request);
                self.pending_requests.insert(id, reply);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn status(&mut self) -> NetworkStatus {
        let local = *self.swarm.local_peer_id();
        let routing_table_peers = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
        let with_id = |addrs: Vec<Multiaddr>| -> Vec<String> {
            addrs.into_iter().map(|a| a.with(Protocol::P2p(local)).to_string()).collect()
        };
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let announced = if external.is_empty() { self.listen_addrs.clone() } else { external };
        NetworkStatus {
            peer_id: local.to_string(),
            listen_addrs: with_id(self.listen_addrs.clone()),
            announced_addrs: with_id(announced),
            routing_table_peers,
            peers_connected: self.connected.len(),
            network_key: self.network_key.map(|key| key.fingerprint()),
            handshakes_failed: self.handshakes_failed,
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Transfer(event)) => self.on_transfer_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event { peer, result: Err(error), .. }))
                if !matches!(error, libp2p::ping::Failure::Unsupported) =>
            {
                // A connection that stopped answering pings is dead even if TCP has not
                // noticed yet: closing it lets failure detection start its grace period.
                // A peer that does not speak ping at all (a foreign client) is not dead.
                debug!(%peer, "ping failed, disconnecting: {error}");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(_)) => {}
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                self.connected.insert(peer_id);
                self.remote_addrs.entry(peer_id).or_insert_with(|| endpoint.get_remote_address().clone());
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.connected.remove(&peer_id);
                self.remote_addrs.remove(&peer_id);
                self.subnets.release(&peer_id);
                self.awaiting_identify.remove(&peer_id);
                // It may come back another build: its next identify decides again.
                self.refused.remove(&peer_id);
                if self.compatible.remove(&peer_id) {
                    let _ = self.peer_events.send(PeerEvent::Down(peer_key(&peer_id)));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => self.listen_addrs.push(address),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen_addrs.retain(|a| *a != address),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, "dial failed: {error}");
                if let DialError::Transport(attempts) = &error {
                    for (addr, error) in attempts {
                        self.on_connection_error(addr, error);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error: ListenError::Denied { cause }, .. } => {
                debug!(%send_back_addr, "refused an inbound connection: {cause}");
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error: ListenError::Transport(error), .. } => {
                debug!(%send_back_addr, "inbound connection failed: {error}");
                self.on_connection_error(&send_back_addr, &error);
            }
            _ => {}
        }
    }

    /// Counts a failed handshake and says what it most likely means, in one line.
    fn on_connection_error(&mut self, addr: &Multiaddr, error: &TransportError<std::io::Error>) {
        let TransportError::Other(error) = error else { return };
        if !transport::is_handshake_failure(error) {
            return;
        }
        self.handshakes_failed += 1;
        let now = tokio::time::Instant::now();
        if self.last_handshake_warning.is_some_and(|last| now < last + HANDSHAKE_WARNING_INTERVAL) {
            return;
        }
        self.last_handshake_warning = Some(now);
        let count = self.handshakes_failed;
        match &self.network_key {
            Some(key) => warn!(
                %addr, failed = count,
                "handshake failed: that peer holds no network key or another one (this peer's is {})",
                key.fingerprint()
            ),
            None => warn!(
                %addr, failed = count,
                "handshake failed: that peer may belong to a private network, whose key this peer lacks"
            ),
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        if let kad::Event::OutboundQueryProgressed { id, result: QueryResult::GetClosestPeers(result), step, .. } =
            event
        {
            // A lookup that timed out still found peers; use what it found, and say so.
            let (peers, finished) = match result {
                Ok(ok) => (ok.peers, true),
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (peers, false),
            };
            if step.last
                && let Some(reply) = self.pending_lookups.remove(&id)
            {
                // Peers of a full subnet would not be admitted once dialed: they are not
                // handed out either, or other peers' lookups could fill a placement.
                let mut taken = HashMap::new();
                let peers: Vec<_> = peers
                    .into_iter()
                    .filter(|p| {
                        !self.refused.contains(&p.peer_id) && self.subnets.would_admit(&p.peer_id, &p.addrs, &mut taken)
                    })
                    .collect();
                let peers = peers.into_iter().map(|p| {
                    // Keep the addresses the lookup learned, so a request can dial the peer
                    // even when it is not in a k-bucket.
                    for addr in p.addrs {
                        self.swarm.add_peer_address(p.peer_id, addr);
                    }
                    peer_key(&p.peer_id)
                });
                let _ = reply.send(Lookup { peers: peers.collect(), finished });
            }
        }
    }

    /// Identify decides what a peer may do. Any peer may look peers up through us (kad,
    /// with the identify and ping other implementations rely on); only a peer announcing
    /// our protocol and network settings, from a subnet not yet full (see
    /// [`crate::SubnetLimit`]), may hold data: it enters the routing table (kad inserts
    /// nothing by itself, see `Behaviour::new`), the node's view and lookups, and has its
    /// transfer requests answered.
    fn on_identify_event(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else { return };
        let waiting = self.awaiting_identify.remove(&peer_id).unwrap_or_default();
        let theirs = Announcement::parse(&info.protocol_version);
        let ours = self.announcement.settings;
        let Some(theirs) = theirs.filter(|theirs| theirs.settings == ours) else {
            let why = match theirs {
                Some(theirs) => {
                    format!("it has other network settings ({})", ours.differences(&theirs.settings).join(", "))
                }
                None => format!("it speaks {:?}", info.protocol_version),
            };
            return self.serve_lookups_only(peer_id, waiting, why);
        };
        let reached_at = self.remote_addrs.get(&peer_id);
        if let Some(Err(subnet)) = reached_at.map(|addr| self.subnets.admit(peer_id, addr)) {
            let why = format!("its subnet {subnet} has as many peers holding data as max_peers_per_subnet allows");
            return self.serve_lookups_only(peer_id, waiting, why);
        }
        self.refused.remove(&peer_id);
        for (request, channel) in waiting {
            self.forward_inbound(peer_id, request, channel);
        }
        // Kad does not learn the listen addresses of peers that dialed us; identify does.
        for addr in info.listen_addrs {
            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
        }
        if self.connected.contains(&peer_id) && self.compatible.insert(peer_id) {
            let event = PeerEvent::Up { peer: peer_key(&peer_id), holding_since_ms: theirs.holding_since_ms };
            let _ = self.peer_events.send(event);
        }
        if !self.bootstrapped {
            self.bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
            info!(peer = %peer_id, "joined the network");
        }
    }

    /// `peer` may look peers up through us, and nothing else: it leaves the routing table
    /// and the node's view, and its transfer requests are refused.
    fn serve_lookups_only(&mut self, peer_id: PeerId, waiting: Vec<(Request, ResponseChannel<Response>)>, why: String) {
        // A peer that changed its announcement is no longer a holder.
        if self.compatible.remove(&peer_id) {
            let _ = self.peer_events.send(PeerEvent::Down(peer_key(&peer_id)));
        }
        if self.refused.insert(peer_id) {
            info!(peer = %peer_id, "serving lookups only to a peer that holds no data: {why}");
        }
        // A `/p2p/` bootstrap address put it there before identify said who it is.
        self.swarm.behaviour_mut().kad.remove_peer(&peer_id);
        for (_, channel) in waiting {
            let _ = self.swarm.behaviour_mut().transfer.send_response(channel, incompatible());
        }
    }

    fn on_transfer_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                if self.compatible.contains(&peer) {
                    self.forward_inbound(peer, request, channel);
                } else if self.refused.contains(&peer) {
                    let _ = self.swarm.behaviour_mut().transfer.send_response(channel, incompatible());
                } else {
                    let waiting = self.awaiting_identify.entry(peer).or_default();
                    waiting.retain(|(_, channel)| channel.is_open());
                    if waiting.len() < AWAITING_IDENTIFY_MAX {
                        waiting.push((request, channel));
                    } else {
                        let busy = Response::Failed("busy: waiting for identify".into());
                        let _ = self.swarm.behaviour_mut().transfer.send_response(channel, busy);
                    }
                }
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                let malformed = matches!(&error, request_response::InboundFailure::Io(e)
                    if e.kind() == std::io::ErrorKind::InvalidData);
                if malformed {
                    warn!(%peer, "cutting off a peer that sent a malformed request: {error}");
                    let _ = self.swarm.disconnect_peer_id(peer);
                } else {
                    debug!(%peer, "inbound request failed: {error}");
                }
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn forward_inbound(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let (reply, answer) = oneshot::channel();
        let inbound = InboundRequest { from: peer_key(&peer), request, reply };
        match self.inbound.try_send(inbound) {
            Ok(()) => self.pending_responses.push(Box::pin(async move { (channel, answer.await.ok()) })),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let busy = Response::Failed("busy: too many requests queued".into());
                let _ = self.swarm.behaviour_mut().transfer.send_response(channel, busy);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn incompatible() -> Response {
    Response::Failed(
        "this peer holds no data with you: another protocol, other network settings or a full subnet".into(),
    )
}
