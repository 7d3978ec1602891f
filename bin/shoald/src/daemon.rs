//! Starting and stopping one peer.

use anyhow::Context;
use axum::serve::ListenerExt;
use shoal_core::settings::Announcement;
use shoal_net::{InboundRequest, NetConfig, PeerEvent};
use shoal_node::Node;
use shoal_store::{RocksStore, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Config;
use crate::data_dir::DataDir;
use crate::network::Libp2pNetwork;

/// How long requests in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

type ShoalNode = Node<RocksStore, Libp2pNetwork>;

/// A running peer.
#[derive(Debug)]
pub struct Daemon {
    pub api_url: String,
    pub peer_id: String,
    /// Listen addresses, each usable as another peer's `--bootstrap`.
    pub p2p_addrs: Vec<String>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Starts a peer and returns once its API and swarm listen.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let data_dir = DataDir::lock(&config.data_dir)?;
        let identity = shoal_net::load_or_create_identity(&data_dir.join("identity.key"))?;
        let network_key = config.network_key.as_deref().map(shoal_net::NetworkKey::load).transpose()?;
        let api_tokens = config.api_tokens.as_deref().map(shoal_api::ApiTokens::load).transpose()?;
        let store = RocksStore::open_with_reserve(&data_dir.join("store"), config.min_free_bytes)
            .context("cannot open the store")?;
        // Logged after the store opened, so an error before it (a data dir in use, a bad
        // config) stays one line.
        match crate::limits::raise_open_files_limit() {
            Ok((before, after)) => info!(?before, ?after, "open files limit raised to the hard limit"),
            Err(error) => warn!("cannot raise the open files limit: {error}"),
        }

        let node_config = config.node_config();
        let announcement =
            Announcement { settings: node_config.network_settings(), holding_since_ms: store.created_ms() };
        let mut net_config = NetConfig::new(identity, announcement);
        net_config.listen = config.listen.clone();
        net_config.bootstrap = config.bootstrap.clone();
        net_config.external = config.external_addrs.clone();
        net_config.request_timeout = config.request_timeout();
        net_config.max_inbound_connections = config.max_inbound_connections;
        net_config.network_key = network_key;
        net_config.subnet_limit = config.subnet_limit();
        let network = shoal_net::start(net_config).await?;
        let network_status = network.client.status().await?;
        // Building the index reads every key: off the async workers.
        let node = tokio::task::spawn_blocking(move || Node::new(node_config, store, Libp2pNetwork(network.client)))
            .await
            .context("indexing the store panicked")??;
        let listener = tokio::net::TcpListener::bind(config.api_addr)
            .await
            .with_context(|| format!("cannot listen for the API on {}", config.api_addr))?;
        let api_url = format!("http://{}", listener.local_addr()?);

        data_dir.publish("api.url", &format!("{api_url}\n"))?;
        data_dir.publish("p2p.addrs", &(network_status.announced_addrs.join("\n") + "\n"))?;
        info!(peer = %network_status.peer_id, api = %api_url, addrs = ?network_status.announced_addrs, "shoald started");
        match &network_key {
            Some(key) => info!(fingerprint = %key.fingerprint(), "private network: only peers with its key connect"),
            None if !config.listens_on_loopback_only() => warn!(
                "THIS NETWORK IS OPEN: any libp2p peer that reaches {:?} joins it and can read, write and delete \
                 every object; give every peer the same --network-key (shoald keygen FILE makes one)",
                config.listen
            ),
            None => {}
        }

        let (shutdown, shutdown_rx) = oneshot::channel();
        node.start();
        let feeds = vec![
            tokio::spawn(answer_peers(node.clone(), network.inbound)),
            tokio::spawn(follow_peers(node.clone(), network.peer_events)),
        ];
        let options = shoal_api::Options { fault_injection: config.fault_injection, tokens: api_tokens };
        let api = shoal_api::router(node.clone(), options);
        let task = tokio::spawn(serve(api, listener, shutdown_rx, node, feeds, data_dir));
        Ok(Self { api_url, peer_id: network_status.peer_id, p2p_addrs: network_status.announced_addrs, shutdown, task })
    }

    /// Stops the API (in-flight requests finish), then the network and the store.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.task.await.context("daemon task panicked")?
    }
}

/// Serves the API until shutdown, then stops what feeds the node and the node's own
/// background work, whose node handles keep the network and the store open.
async fn serve(
    api: axum::Router,
    listener: tokio::net::TcpListener,
    shutdown: oneshot::Receiver<()>,
    node: ShoalNode,
    feeds: Vec<JoinHandle<()>>,
    data_dir: DataDir,
) -> anyhow::Result<()> {
    let (stopping_tx, stopping) = oneshot::channel::<()>();
    // Without TCP_NODELAY a small response's last segment waits for the client's delayed
    // ACK: 4 KiB gets took 44 ms each.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY on an API connection: {error}");
        }
    });
    let server = axum::serve(listener, api).with_graceful_shutdown(async {
        let _ = shutdown.await;
        let _ = stopping_tx.send(());
    });
    // In-flight requests get a deadline to finish: a stalled client cannot hold up SIGTERM.
    let result = tokio::select! {
        result = server => result.context("API server failed"),
        () = async {
            let _ = stopping.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    };
    for feed in feeds {
        feed.abort();
        let _ = feed.await;
    }
    node.stop().await;
    info!("shoald stopped");
    // The store and the swarm close as the last node handles drop; the lock goes last.
    drop(data_dir);
    result
}

/// Feeds the network's peer events to failure detection.
async fn follow_peers(node: ShoalNode, mut events: mpsc::UnboundedReceiver<PeerEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            PeerEvent::Up { peer, holding_since_ms } => node.peer_up(peer, holding_since_ms),
            PeerEvent::Down(peer) => node.peer_down(&peer),
        }
    }
}

/// Hands other peers' transfer requests to the node, which answers a bounded number at
/// a time.
async fn answer_peers(node: ShoalNode, mut inbound: mpsc::Receiver<InboundRequest>) {
    while let Some(InboundRequest { from, request, reply }) = inbound.recv().await {
        node.answer(from, request, move |response| {
            let _ = reply.send(response);
        })
        .await;
    }
}
