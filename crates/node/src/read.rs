//! Get: find and verify the manifest, then stream verified chunks from their holders.
//!
//! The manifest is checked against the object id before any chunk is fetched; every chunk
//! is checked against the manifest before a byte of it is handed on. Holders are asked one
//! at a time, this peer and the fastest first (see [`crate::rpc`]): one that does not hold
//! the item, is unreachable or sends wrong bytes is skipped for the next, and one that is
//! slow to answer is hedged, so the next is asked too and the first verified answer wins.
//! When no holder is left the stream ends in an error, never in wrong bytes.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use shoal_core::{CHUNK_SIZE, ItemKey, Manifest, ObjectId, PeerKey, codec};
use shoal_store::Store;
use tracing::warn;

use crate::calls::Strategy;
use crate::error::describe_failures;
use crate::rpc::CallError;
use crate::{Network, Node, NodeError};

/// Why a holder did not deliver a verified copy.
enum Miss {
    Absent,
    Wrong(String),
    Failed(CallError),
}

impl Miss {
    fn describe(misses: &[(PeerKey, Miss)]) -> String {
        let reasons: Vec<(String, String)> = misses
            .iter()
            .map(|(peer, miss)| {
                let reason = match miss {
                    Miss::Absent => "does not hold it".to_owned(),
                    Miss::Wrong(reason) => format!("sent wrong bytes ({reason})"),
                    Miss::Failed(error) => error.to_string(),
                };
                (peer.to_string(), reason)
            })
            .collect();
        describe_failures(&reasons)
    }
}

impl<S: Store, N: Network> Node<S, N> {
    /// The object's verified manifest, from this peer's store or the fastest holder.
    pub async fn manifest(&self, id: ObjectId) -> Result<Manifest, NodeError> {
        let verified = self
            .fetch_verified(ItemKey::manifest(id), move |bytes| {
                let manifest: Manifest = codec::decode(&bytes).map_err(|e| e.to_string())?;
                manifest.verify(&id).map_err(|e| e.to_string())?;
                Ok(manifest)
            })
            .await?;
        match verified {
            Ok(manifest) => Ok(manifest),
            // Not found only when every holder, past and present, answered "not here": one
            // that did not answer might hold it.
            Err(misses) if misses.iter().all(|(_, miss)| matches!(miss, Miss::Absent)) => Err(NodeError::NotFound(id)),
            Err(mut misses) => {
                misses.retain(|(_, miss)| !matches!(miss, Miss::Absent));
                Err(NodeError::Unavailable { what: format!("manifest {id}"), failures: Miss::describe(&misses) })
            }
        }
    }

    /// The bytes of `range` of the object `manifest` describes, chunk by chunk, fetched
    /// `chunks_in_flight` at a time and handed on in order, up to the first chunk that no
    /// holder can deliver: that one is the stream's last item, an error naming it.
    pub fn read(
        &self,
        manifest: Manifest,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, NodeError>> + Send + 'static {
        assert!(range.start <= range.end && range.end <= manifest.size, "range checked by the caller");
        let chunk = CHUNK_SIZE as u64;
        let indices =
            if range.is_empty() { 0..0 } else { (range.start / chunk) as usize..range.end.div_ceil(chunk) as usize };
        let manifest = Arc::new(manifest);
        let node = self.clone();
        stream::iter(indices)
            .map(move |index| {
                let (node, manifest) = (node.clone(), manifest.clone());
                async move {
                    let bytes = node.fetch_chunk(manifest.clone(), index).await?;
                    // Trim the first and last chunk to the requested range.
                    let (offset, len) = manifest.chunk_span(index);
                    let start = range.start.saturating_sub(offset).min(len as u64) as usize;
                    let end = (range.end - offset).min(len as u64) as usize;
                    Ok(bytes.slice(start..end))
                }
            })
            .buffered(self.inner.config.chunks_in_flight)
            // The first chunk that cannot be delivered ends the stream.
            .scan(false, |failed, chunk| {
                let next = (!*failed).then(|| {
                    *failed = chunk.is_err();
                    chunk
                });
                std::future::ready(next)
            })
    }

    /// Chunk `index`, verified, from this peer or the first holder with good bytes.
    async fn fetch_chunk(&self, manifest: Arc<Manifest>, index: usize) -> Result<Bytes, NodeError> {
        let key = ItemKey::chunk(manifest.chunks[index].id);
        let verified = self
            .fetch_verified(key, move |bytes| {
                manifest.verify_chunk(index, &bytes).map(|()| bytes).map_err(|e| e.to_string())
            })
            .await?;
        verified.map_err(|misses| NodeError::Unavailable {
            what: format!("chunk {index} ({key})"),
            failures: Miss::describe(&misses),
        })
    }

    /// The first copy of `key` that `verify` accepts, from this peer or another holder,
    /// the current ones and those a recent arrival displaced (which may not have handed
    /// it off yet); or why each holder did not deliver one.
    async fn fetch_verified<T: Send + 'static>(
        &self,
        key: ItemKey,
        verify: impl Fn(Bytes) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Result<T, Vec<(PeerKey, Miss)>>, NodeError> {
        let me = self.local_peer().clone();
        let mut holders = self.placement(&key).await?.everyone();
        holders.retain(|peer| *peer != me);
        holders.insert(0, me);
        let strategy = Strategy::OneAtATime { hedge_after: Some(self.inner.config.read_hedge_after) };
        let (node, verify) = (self.clone(), Arc::new(verify));
        let mut answers = self.calls(self.by_latency(holders), strategy, move |peer| {
            let (node, verify) = (node.clone(), verify.clone());
            async move {
                match node.fetch_from(&peer, key).await {
                    Ok(Some(bytes)) => verify(bytes).map_err(Miss::Wrong),
                    Ok(None) => Err(Miss::Absent),
                    Err(error) => Err(Miss::Failed(error)),
                }
            }
        });
        let mut misses = Vec::new();
        while let Some((peer, answer)) = answers.next().await {
            match answer {
                Ok(value) => return Ok(Ok(value)),
                Err(miss) => {
                    if let Miss::Wrong(reason) = &miss {
                        warn!(%peer, item = ?key, "holder sent wrong bytes: {reason}");
                    }
                    misses.push((peer, miss));
                }
            }
        }
        Ok(Err(misses))
    }
}
