//! Get: find and verify the manifest, then stream verified chunks from their holders.
//!
//! The manifest is checked against the object id before any chunk is fetched; every chunk
//! is checked against the manifest before a byte of it is handed on. A holder that is
//! unreachable or sends wrong bytes is skipped for the next one; when none is left the
//! stream ends in an error, never in wrong bytes.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt};
use shoal_core::wire::{Request, Response};
use shoal_core::{CHUNK_SIZE, ItemKey, Manifest, ObjectId, PeerKey, codec};
use shoal_store::Store;
use tracing::warn;

use crate::error::describe_failures;
use crate::{Network, Node, NodeError};

impl<S: Store, N: Network> Node<S, N> {
    /// The object's verified manifest, from this peer's store or the closest holder.
    pub async fn manifest(&self, id: ObjectId) -> Result<Manifest, NodeError> {
        let key = ItemKey::manifest(id);
        let decode_verified = |bytes: &[u8]| -> Result<Manifest, String> {
            let manifest: Manifest = codec::decode(bytes).map_err(|e| e.to_string())?;
            manifest.verify(&id).map_err(|e| e.to_string())?;
            Ok(manifest)
        };
        let (mut wrong, mut unreachable) = (Vec::new(), Vec::new());
        match self.fetch_local(key).await {
            Ok(Some(bytes)) => {
                return decode_verified(&bytes)
                    .map_err(|e| NodeError::Unavailable { what: format!("manifest {id}"), failures: e });
            }
            Ok(None) => {}
            Err(reason) => unreachable.push((self.local_peer().to_string(), reason)),
        }
        for peer in self.remote_holders(&key).await? {
            match self.fetch_remote(&peer, key).await {
                Ok(Some(bytes)) => match decode_verified(&bytes) {
                    Ok(manifest) => return Ok(manifest),
                    Err(reason) => wrong.push((peer.to_string(), format!("sent a bad manifest ({reason})"))),
                },
                Ok(None) => {}
                Err(reason) => unreachable.push((peer.to_string(), reason)),
            }
        }
        // Not found only when every holder, past and present, answered "not here": one
        // that did not answer might hold it.
        if wrong.is_empty() && unreachable.is_empty() {
            return Err(NodeError::NotFound(id));
        }
        wrong.extend(unreachable);
        Err(NodeError::Unavailable { what: format!("manifest {id}"), failures: describe_failures(&wrong) })
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
        let manifest = std::sync::Arc::new(manifest);
        let node = self.clone();
        stream::iter(indices)
            .map(move |index| {
                let (node, manifest) = (node.clone(), manifest.clone());
                async move {
                    let bytes = node.fetch_chunk(&manifest, index).await?;
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
    async fn fetch_chunk(&self, manifest: &Manifest, index: usize) -> Result<Bytes, NodeError> {
        let key = ItemKey::chunk(manifest.chunks[index].id);
        let mut failures = Vec::new();
        match self.fetch_local(key).await {
            Ok(Some(bytes)) if manifest.verify_chunk(index, &bytes).is_ok() => return Ok(bytes),
            Ok(_) => {}
            Err(reason) => failures.push((self.local_peer().to_string(), reason)),
        }
        for peer in self.remote_holders(&key).await? {
            let reason = match self.fetch_remote(&peer, key).await {
                Ok(Some(bytes)) => match manifest.verify_chunk(index, &bytes) {
                    Ok(()) => return Ok(bytes),
                    Err(error) => {
                        warn!(%peer, item = ?key, "holder sent wrong bytes: {error}");
                        format!("sent wrong bytes ({error})")
                    }
                },
                Ok(None) => "does not hold it".to_owned(),
                Err(reason) => reason,
            };
            failures.push((peer.to_string(), reason));
        }
        Err(NodeError::Unavailable { what: format!("chunk {index} ({key})"), failures: describe_failures(&failures) })
    }

    /// The replicas of `key` other than this peer: its current holders closest first,
    /// then those a recent arrival displaced, which may not have handed it off yet.
    async fn remote_holders(&self, key: &ItemKey) -> Result<Vec<PeerKey>, NodeError> {
        let mut holders = self.placement(key).await?.everyone();
        holders.retain(|peer| peer != self.local_peer());
        Ok(holders)
    }

    /// The item from `peer`, unverified; `None` if it does not hold it.
    pub(crate) async fn fetch_remote(&self, peer: &PeerKey, key: ItemKey) -> Result<Option<Bytes>, String> {
        self.call(peer, Request::Fetch { key }, |answer| match answer {
            Response::Item(item) => Ok(item),
            other => Err(other),
        })
        .await
    }
}
