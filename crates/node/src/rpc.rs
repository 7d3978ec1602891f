//! Requests to other peers: one typed call per request kind, the only place an answer is
//! matched to its request; [`crate::calls`] sends one to several peers.
//!
//! This peer answers its own requests without the network, so callers never tell the
//! local holder from a remote one.

use bytes::Bytes;
use shoal_core::digest::{Bucket, ContentTag, Fingerprint, TreeNode};
use shoal_core::names::NameRecord;
use shoal_core::references::References;
use shoal_core::wire::{Request, Response};
use shoal_core::{Hash32, ItemKey, PeerKey, codec};
use shoal_store::Store;
use tokio::time::Instant;

use crate::{Network, Node};

/// Why a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// The request or its answer was lost: the peer may or may not have acted on it.
    #[error("{0}")]
    Network(String),
    /// The peer answered that it could not do it.
    #[error("{0}")]
    Refused(String),
    /// The peer answered, but not what the request calls for.
    #[error("answered a {0} request with something else")]
    Unexpected(&'static str),
}

impl<S: Store, N: Network> Node<S, N> {
    /// Sends `request` to `peer` and hands the answer to `expected`, which takes out of it
    /// what the request calls for.
    async fn call<T>(
        &self,
        peer: &PeerKey,
        request: Request,
        kind: &'static str,
        expected: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, CallError> {
        let response = if peer == self.local_peer() {
            self.handle_request(peer, request).await
        } else {
            self.inner.network.request(peer, request).await.map_err(|error| CallError::Network(error.0))?
        };
        match response {
            Response::Failed(reason) => Err(CallError::Refused(reason)),
            response => expected(response).ok_or(CallError::Unexpected(kind)),
        }
    }

    /// The item from `peer`, unverified; `None` if it does not hold it.
    pub(crate) async fn fetch_from(&self, peer: &PeerKey, key: ItemKey) -> Result<Option<Bytes>, CallError> {
        let sent = Instant::now();
        let fetched = self
            .call(peer, Request::Fetch { key }, "Fetch", |answer| match answer {
                Response::Item(item) => Some(item),
                _ => None,
            })
            .await;
        if peer != self.local_peer() {
            self.inner.latencies.record(peer, sent.elapsed());
        }
        fetched
    }

    /// Stores `items` on `peer` as one synced write; returns the newer record of their name
    /// that it kept instead of the one sent, if any.
    pub(crate) async fn store_on(
        &self,
        peer: &PeerKey,
        items: Vec<(ItemKey, Bytes)>,
    ) -> Result<Option<NameRecord>, CallError> {
        self.call(peer, Request::Store { items }, "Store", |answer| match answer {
            Response::Stored { newer } => Some(newer),
            _ => None,
        })
        .await
    }

    /// Merges `sets` into `peer`'s reference sets; returns the ids whose chunk it lacks.
    pub(crate) async fn refer_on(
        &self,
        peer: &PeerKey,
        sets: Vec<(Hash32, References)>,
    ) -> Result<Vec<Hash32>, CallError> {
        self.call(peer, Request::Refer { sets }, "Refer", |answer| match answer {
            Response::Referred { without_chunk } => Some(without_chunk),
            _ => None,
        })
        .await
    }

    /// `peer`'s wall clock, in ms since the Unix epoch.
    pub(crate) async fn ping(&self, peer: &PeerKey) -> Result<u64, CallError> {
        self.call(peer, Request::Ping, "Ping", |answer| match answer {
            Response::Pong { wall_ms } => Some(wall_ms),
            _ => None,
        })
        .await
    }

    /// `peer`'s fingerprints of `nodes`, one each, for the comparison with this peer.
    pub(crate) async fn digests_of(&self, peer: &PeerKey, nodes: &[TreeNode]) -> Result<Vec<Fingerprint>, CallError> {
        let request = Request::Digests { nodes: nodes.to_vec() };
        let sent = codec::encoded_len(&request);
        let digests = self
            .call(peer, request, "Digests", |answer| match answer {
                Response::Digests(digests) if digests.len() == nodes.len() => Some(digests),
                _ => None,
            })
            .await?;
        self.count_anti_entropy_bytes(sent + codec::encoded_len(&digests));
        Ok(digests)
    }

    /// Every key `peer` holds in `buckets`, with its content tag.
    pub(crate) async fn keys_of(
        &self,
        peer: &PeerKey,
        buckets: &[Bucket],
    ) -> Result<Vec<(ItemKey, ContentTag)>, CallError> {
        let request = Request::BucketKeys { buckets: buckets.to_vec() };
        let sent = codec::encoded_len(&request);
        let keys = self
            .call(peer, request, "BucketKeys", |answer| match answer {
                Response::Keys(keys) => Some(keys),
                _ => None,
            })
            .await?;
        self.count_anti_entropy_bytes(sent + codec::encoded_len(&keys));
        Ok(keys)
    }

    fn count_anti_entropy_bytes(&self, bytes: usize) {
        self.inner.counters.anti_entropy_bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// `peer`'s proofs of possession of `keys` for `nonce`, in order (see
    /// [`Request::Prove`]).
    pub(crate) async fn proofs_from(
        &self,
        peer: &PeerKey,
        nonce: Hash32,
        keys: &[ItemKey],
    ) -> Result<Vec<Option<Hash32>>, CallError> {
        self.call(peer, Request::Prove { nonce, keys: keys.to_vec() }, "Prove", |answer| match answer {
            Response::Proofs(proofs) if proofs.len() == keys.len() => Some(proofs),
            _ => None,
        })
        .await
    }

    /// The value of the mergeable item `key` that `peer` holds as one of its holders.
    pub(crate) async fn held_value(&self, peer: &PeerKey, key: ItemKey) -> Result<Option<Bytes>, CallError> {
        self.call(peer, Request::Holding { key }, "Holding", |answer| match answer {
            Response::Item(value) => Some(value),
            _ => None,
        })
        .await
    }

    /// `peer`'s page of the name records it holds (see [`crate::listing`]): at most
    /// `limit` records, and whether more match.
    pub(crate) async fn names_of(
        &self,
        peer: &PeerKey,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<NameRecord>, bool), CallError> {
        let request =
            Request::ListNames { prefix: prefix.to_owned(), after: after.map(str::to_owned), limit: limit as u32 };
        self.call(peer, request, "ListNames", |answer| match answer {
            Response::Names { records, more } if records.len() <= limit => Some((records, more)),
            _ => None,
        })
        .await
    }
}
