//! The node: shared state, placement, local store access and inbound requests.

use std::sync::Arc;

use bytes::Bytes;
use shoal_core::placement::closest;
use shoal_core::wire::{Request, Response};
use shoal_core::{ItemKey, PeerKey};
use shoal_store::{Store, StoreError};
use tokio::sync::Semaphore;
use tracing::warn;

use crate::{Network, NodeError};

/// Replica settings. R is network-wide; the window bounds memory per request.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// R: how many peers hold every item.
    pub replication_factor: usize,
    /// Chunks in flight per put or get: memory per transfer is about this many MiB times
    /// (1 + R) on a put.
    pub chunks_in_flight: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { replication_factor: 3, chunks_in_flight: 8 }
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub network: crate::NetworkStatus,
    pub replication_factor: usize,
    pub items_stored: u64,
    pub bytes_stored: u64,
}

/// A Shoal peer's replica logic. Cheap to clone.
#[derive(Debug)]
pub struct Node<S, N> {
    pub(crate) inner: Arc<Inner<S, N>>,
}

impl<S, N> Clone for Node<S, N> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

#[derive(Debug)]
pub(crate) struct Inner<S, N> {
    pub config: NodeConfig,
    pub store: Arc<S>,
    pub network: N,
    /// Replica writes outstanding on this node, including those that go on after a put
    /// met its consistency level.
    pub write_slots: Arc<Semaphore>,
}

impl<S: Store, N: Network> Node<S, N> {
    pub fn new(config: NodeConfig, store: S, network: N) -> Self {
        assert!(config.replication_factor >= 1 && config.chunks_in_flight >= 1);
        let write_slots = Arc::new(Semaphore::new(config.chunks_in_flight * config.replication_factor * 2));
        Self { inner: Arc::new(Inner { config, store: Arc::new(store), network, write_slots }) }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn local_peer(&self) -> &PeerKey {
        self.inner.network.local_peer()
    }

    /// The R peers that should hold `key`: the closest among every peer a DHT lookup
    /// reaches, this one included. Peers that do not answer the lookup are not candidates,
    /// so writes go to the R closest reachable peers.
    pub async fn placement(&self, key: &ItemKey) -> Result<Vec<PeerKey>, NodeError> {
        let mut candidates = self.inner.network.closest_peers(&key.id).await?;
        candidates.push(self.local_peer().clone());
        Ok(closest(&key.id, &candidates, self.inner.config.replication_factor))
    }

    /// Runs a store call on the blocking pool.
    pub(crate) async fn with_store<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || work(&store)).await.expect("store calls do not panic")
    }

    pub(crate) async fn store_local(&self, key: ItemKey, value: Bytes) -> Result<(), StoreError> {
        self.with_store(move |store| store.put(&[(key, value)])).await
    }

    /// The item from the local store; a corrupt copy counts as absent (and is logged).
    pub(crate) async fn fetch_local(&self, key: ItemKey) -> Option<Bytes> {
        match self.with_store(move |store| store.get(&key)).await {
            Ok(value) => value,
            Err(error) => {
                warn!(item = ?key, "local copy unusable: {error}");
                None
            }
        }
    }

    /// Answers a transfer request from another peer.
    pub async fn handle_request(&self, from: &PeerKey, request: Request) -> Response {
        match request {
            Request::Store { key, value } => match self.store_local(key, value).await {
                Ok(()) => Response::Stored,
                Err(error) => {
                    warn!(peer = ?from, item = ?key, "refused a store: {error}");
                    Response::Failed(error.to_string())
                }
            },
            Request::Fetch { key } => Response::Item(self.fetch_local(key).await),
        }
    }

    /// Every item in this peer's store.
    pub async fn local_items(&self) -> Result<Vec<ItemKey>, NodeError> {
        let keys = self
            .with_store(|store| {
                let mut keys = Vec::new();
                for kind in shoal_core::ItemKind::ALL {
                    keys.extend(store.keys(kind)?);
                }
                Ok(keys)
            })
            .await?;
        Ok(keys)
    }

    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let network = self.inner.network.status().await?;
        let stats = self.inner.store.stats();
        Ok(NodeStatus {
            network,
            replication_factor: self.inner.config.replication_factor,
            items_stored: stats.items,
            bytes_stored: stats.bytes,
        })
    }
}
