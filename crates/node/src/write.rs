//! Put: chunk a streamed body, replicate each chunk, then the manifest that makes the
//! object visible.
//!
//! Chunks are replicated while the body is still arriving, at most `chunks_in_flight` at
//! a time, so memory stays bounded whatever the object size. The manifest goes out only
//! after every chunk reached its consistency level, or, for an object under the chunk
//! size, together with its one chunk in one synced batch per replica: no replica ever
//! holds a manifest without its chunks' consistency level met or its chunk beside it. An
//! upload that breaks off leaves no manifest, so nothing half-stored is ever served. An
//! unnamed object's pin shares the manifest's key, so it rides in the manifest's batch.
//!
//! What a put writes is never without a reference that keeps it (see
//! [`shoal_core::references`]): each chunk goes out with the put's upload lease in its
//! batch; before the object becomes visible, the put refers to every chunk, and to the
//! manifest in its own batch, by the version of the name record (or pin) it is about to
//! write.

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, FuturesUnordered, Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use shoal_core::names::{Binding, NameRecord, merge};
use shoal_core::references::{References, Referrer, Upload};
use shoal_core::wire::{Request, Response};
use shoal_core::{
    CHUNK_SIZE, ChunkDigest, ChunkId, ChunkRef, Consistency, Hash32, ItemKey, ItemKind, MAX_OBJECT_SIZE, Manifest,
    ObjectId, PeerKey, codec,
};
use shoal_store::Store;
use tokio::sync::mpsc;

use crate::error::describe_failures;
use crate::serve::MAX_KEYS_PER_REQUEST;
use crate::{Network, Node, NodeError};

/// Chunks up to this size are hashed on the async thread: about 10 µs of BLAKE3.
const HASH_IN_PLACE_BYTES_MAX: usize = 64 << 10;

/// What a successful put reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReceipt {
    pub id: ObjectId,
    pub size: u64,
    pub chunks: usize,
    /// The fewest durable acks any item of the object got before the answer.
    pub acks: usize,
    pub replication_factor: usize,
    pub consistency: Consistency,
}

/// The chunks of an object, replicated but for a lone chunk.
struct StoredChunks {
    manifest: Manifest,
    /// The fewest acks any replicated chunk got (`usize::MAX` if none was).
    fewest_acks: usize,
    /// The only chunk of an object under the chunk size, not yet replicated: its id is the
    /// object's, so it has the manifest's holders and goes out with the manifest in one
    /// batch, one message and one synced write per replica instead of two.
    lone_chunk: Option<(ItemKey, Bytes)>,
}

/// An object whose chunks are replicated, ready to be bound to a name or pinned.
pub(crate) struct UnboundObject {
    pub id: ObjectId,
    /// The manifest, and the lone chunk of an object under the chunk size: they go out in
    /// one batch with the reference that keeps them.
    pub items: Vec<(ItemKey, Bytes)>,
    /// The replicated chunks, each once, which the binding refers to before it is written.
    pub chunks: Vec<ChunkId>,
    /// The upload lease that keeps those chunks until a binding refers to them.
    pub lease: Upload,
}

/// What a replicated batch got.
pub(crate) struct Replicated {
    /// Replicas that took every item.
    pub acks: usize,
    /// The newest record of the batch's name that a replica kept
    /// instead of the one sent: the caller writes again past it.
    pub newer: Option<NameRecord>,
}

/// Cuts a byte stream into chunks of exactly [`CHUNK_SIZE`] bytes (the last may be
/// shorter), copying each byte once.
#[derive(Debug, Default)]
struct Chunker {
    partial: BytesMut,
}

impl Chunker {
    fn push(&mut self, mut bytes: Bytes, mut emit: impl FnMut(Bytes)) {
        while !bytes.is_empty() {
            if self.partial.is_empty() && bytes.len() >= CHUNK_SIZE {
                emit(bytes.split_to(CHUNK_SIZE));
                continue;
            }
            if self.partial.capacity() == 0 {
                self.partial.reserve(CHUNK_SIZE);
            }
            let take = (CHUNK_SIZE - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes.split_to(take));
            if self.partial.len() == CHUNK_SIZE {
                emit(self.partial.split().freeze());
            }
        }
    }

    fn finish(self) -> Option<Bytes> {
        (!self.partial.is_empty()).then(|| self.partial.freeze())
    }
}

impl<S: Store, N: Network> Node<S, N> {
    /// Stores the object streamed in `body`, unnamed: it is pinned (kept until deleted by
    /// id). Returns once every chunk, the manifest and the pin have the acks
    /// `consistency` asks for.
    pub async fn put<B, E>(&self, body: B, consistency: Consistency) -> Result<PutReceipt, NodeError>
    where
        B: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        Ok(self.store_and_bind(None, body, consistency).await?.0)
    }

    /// Stores the object streamed in `body`, then binds `name` to it, or when unnamed pins
    /// it (a name record named and keyed by the object's id: no user name can be spelled
    /// like an id). A pin has the manifest's holders, so the two go out in one batch, with
    /// the chunk of an object under the chunk size: such a put takes one round of acks.
    pub(crate) async fn store_and_bind<B, E>(
        &self,
        name: Option<&str>,
        body: B,
        consistency: Consistency,
    ) -> Result<(PutReceipt, NameRecord), NodeError>
    where
        B: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let until_ms = self.now_ms().saturating_add(self.inner.config.upload_lifetime.as_millis() as u64);
        let lease = Upload { id: self.next_version()?, until_ms };
        let StoredChunks { manifest, fewest_acks, lone_chunk } = self.store_chunks(body, consistency, lease).await?;
        let id = manifest.object_id().expect("a manifest we built is consistent");
        debug_assert!(lone_chunk.as_ref().is_none_or(|(key, _)| key.id == id.0), "a lone chunk's id is the object's");
        let mut chunks: Vec<ChunkId> = match lone_chunk {
            Some(_) => Vec::new(),
            None => manifest.chunks.iter().map(|chunk| chunk.id).collect(),
        };
        chunks.sort_unstable_by_key(|chunk| chunk.0);
        chunks.dedup();
        let items = lone_chunk.into_iter().chain([(ItemKey::manifest(id), codec::encode(&manifest).into())]).collect();
        let object = UnboundObject { id, items, chunks, lease };
        let binding = Binding::Object { id, size: manifest.size };
        let name = name.map_or_else(|| id.to_hex(), str::to_owned);
        let (record, acks) = self.write_binding(&name, binding, consistency, Some(&object)).await?;
        let receipt = PutReceipt {
            id,
            size: manifest.size,
            chunks: manifest.chunks.len(),
            acks: fewest_acks.min(acks),
            replication_factor: self.inner.config.replication_factor,
            consistency,
        };
        Ok((receipt, record))
    }

    /// Replicates the chunks of the object streamed in `body`, but a lone chunk, each with
    /// the upload `lease` that keeps it until the object refers to it, and returns the
    /// object's manifest.
    async fn store_chunks<B, E>(
        &self,
        body: B,
        consistency: Consistency,
        lease: Upload,
    ) -> Result<StoredChunks, NodeError>
    where
        B: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let window = self.inner.config.chunks_in_flight;
        let mut body = std::pin::pin!(body);
        let mut chunker = Chunker::default();
        let mut ready = std::collections::VecDeque::<Bytes>::new();
        let mut in_flight = FuturesUnordered::new();
        let mut chunks: Vec<Option<ChunkRef>> = Vec::new();
        let mut size = 0u64;
        let mut fewest_acks = usize::MAX;
        let mut body_done = false;
        let lease: Bytes = codec::encode(&References::of(Referrer::Upload(lease))).into();

        loop {
            if body_done && chunks.is_empty() && ready.len() == 1 {
                let bytes = ready.pop_front().expect("one chunk ready");
                let digest = Self::digest(0, bytes.clone()).await;
                let lone_chunk = Some((ItemKey::chunk(digest.id), bytes));
                let manifest = Manifest { size, chunks: vec![digest.into()] };
                return Ok(StoredChunks { manifest, fewest_acks: usize::MAX, lone_chunk });
            }
            // Start every complete chunk we have room for, then wait for room or input.
            while in_flight.len() < window
                && let Some(chunk) = ready.pop_front()
            {
                let index = chunks.len();
                chunks.push(None);
                in_flight.push(self.put_chunk(index, chunk, lease.clone(), consistency));
            }
            if body_done && ready.is_empty() && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let (index, chunk, acks) = done?;
                    chunks[index] = Some(chunk);
                    fewest_acks = fewest_acks.min(acks);
                }
                frame = body.next(), if !body_done && ready.is_empty() && in_flight.len() < window => match frame {
                    Some(Ok(bytes)) => {
                        size += bytes.len() as u64;
                        if size > MAX_OBJECT_SIZE {
                            return Err(NodeError::TooLarge);
                        }
                        chunker.push(bytes, |chunk| ready.push_back(chunk));
                    }
                    Some(Err(error)) => return Err(NodeError::Body(error.to_string())),
                    None => {
                        body_done = true;
                        ready.extend(std::mem::take(&mut chunker).finish());
                    }
                },
            }
        }

        let manifest =
            Manifest { size, chunks: chunks.into_iter().map(|c| c.expect("every chunk finished")).collect() };
        Ok(StoredChunks { manifest, fewest_acks, lone_chunk: None })
    }

    /// Chunk `index`'s key and chaining value: hashed off the async threads, but for a
    /// small chunk, which takes less time to hash than to hand to another thread.
    async fn digest(index: usize, bytes: Bytes) -> ChunkDigest {
        if bytes.len() <= HASH_IN_PLACE_BYTES_MAX {
            return ChunkDigest::compute(index as u64, &bytes);
        }
        tokio::task::spawn_blocking(move || ChunkDigest::compute(index as u64, &bytes))
            .await
            .expect("hashing does not panic")
    }

    /// Replicates chunk `index` with the upload's `lease` in its batch.
    async fn put_chunk(
        &self,
        index: usize,
        bytes: Bytes,
        lease: Bytes,
        consistency: Consistency,
    ) -> Result<(usize, ChunkRef, usize), NodeError> {
        let digest = Self::digest(index, bytes.clone()).await;
        let items = vec![(ItemKey::chunk(digest.id), bytes), (ItemKey::references(digest.id.0), lease)];
        let replicated = self.replicate(items, consistency).await?;
        Ok((index, digest.into(), replicated.acks))
    }

    /// Writes `object` so that `record` refers to it: a reference to every chunk on its
    /// holders (which ends the upload's lease there: the binding keeps them now), then the
    /// manifest (and lone chunk) with its own reference in one batch, all at
    /// `consistency`, then the record itself (in that batch for a pin, which shares the
    /// manifest's id). Fails without writing the record if the lease has run out:
    /// collection may have started on the chunks.
    pub(crate) async fn write_bound_object(
        &self,
        record: &NameRecord,
        object: &UnboundObject,
        consistency: Consistency,
    ) -> Result<Replicated, NodeError> {
        if !object.chunks.is_empty() && self.now_ms() > object.lease.until_ms {
            return Err(NodeError::Unavailable {
                what: format!("object {}", object.id),
                failures: format!("the upload took longer than {:?}", self.inner.config.upload_lifetime),
            });
        }
        let referrer = Referrer::Binding { name: record.key().id, version: record.version };
        let lease = Referrer::Upload(object.lease);
        let mut chunk_references = References::of(lease);
        chunk_references.kill(&lease, self.now_ms());
        chunk_references.merge(&References::of(referrer));
        let chunk_acks = self.refer(&object.chunks, &chunk_references, consistency).await?;
        let mut items = object.items.clone();
        items.push((ItemKey::references(object.id.0), codec::encode(&References::of(referrer)).into()));
        let record_item = (record.key(), Bytes::from(codec::encode(record)));
        let mut replicated = if record.key().id == object.id.0 {
            items.push(record_item);
            self.replicate(items, consistency).await?
        } else {
            let object_acks = self.replicate(items, consistency).await?.acks;
            let mut replicated = self.replicate(vec![record_item], consistency).await?;
            replicated.acks = replicated.acks.min(object_acks);
            replicated
        };
        replicated.acks = replicated.acks.min(chunk_acks);
        Ok(replicated)
    }

    /// Merges `set` into the reference sets of `chunks` on their holders, one request per
    /// holder, and returns, once every chunk has what `consistency` asks for, the fewest
    /// acks a chunk got (`usize::MAX` if there are none). Only a holder that also holds
    /// the chunk acks it. Requests still out then go on in the background: a holder left
    /// with the lease alone would count for nothing once the lease ends, and anti-entropy
    /// could bring it the binding only while another holder is there.
    async fn refer(&self, chunks: &[ChunkId], set: &References, consistency: Consistency) -> Result<usize, NodeError> {
        let required = consistency.required(self.inner.config.replication_factor);
        let placements: Vec<Vec<PeerKey>> =
            stream::iter(chunks.iter().copied())
                .map(|chunk| async move {
                    Ok::<_, NodeError>(self.placement(&ItemKey::chunk(chunk)).await?.current().to_vec())
                })
                .buffered(self.inner.config.chunks_in_flight)
                .try_collect()
                .await?;
        let mut by_holder: BTreeMap<PeerKey, Vec<Hash32>> = BTreeMap::new();
        for (chunk, holders) in chunks.iter().zip(placements) {
            for holder in holders {
                by_holder.entry(holder).or_default().push(chunk.0);
            }
        }
        let requests: Vec<(PeerKey, Vec<Hash32>)> = by_holder
            .into_iter()
            .flat_map(|(holder, ids)| {
                ids.chunks(MAX_KEYS_PER_REQUEST).map(|ids| (holder.clone(), ids.to_vec())).collect::<Vec<_>>()
            })
            .collect();
        let (answer_tx, mut answers) = mpsc::channel(requests.len().max(1));
        for (holder, ids) in requests {
            let (node, answer_tx) = (self.clone(), answer_tx.clone());
            let sets = ids.iter().map(|id| (*id, set.clone())).collect();
            self.inner.tasks.spawn(async move {
                let answer = node.refer_on(&holder, sets).await;
                let _ = answer_tx.send((holder, ids, answer)).await;
            });
        }
        drop(answer_tx);
        let mut acks: HashMap<Hash32, usize> = HashMap::new();
        let mut short = chunks.len();
        let mut failures = Vec::new();
        while short > 0
            && let Some((holder, ids, answer)) = answers.recv().await
        {
            match answer {
                Ok(without_chunk) => {
                    if !without_chunk.is_empty() {
                        failures.push((holder.to_string(), format!("lacks {} of the chunks", without_chunk.len())));
                    }
                    for id in ids.iter().filter(|id| !without_chunk.contains(id)) {
                        let got = acks.entry(*id).or_default();
                        *got += 1;
                        short -= usize::from(*got == required);
                    }
                }
                Err(reason) => failures.push((holder.to_string(), reason)),
            }
        }
        let fewest = chunks.iter().map(|chunk| acks.get(&chunk.0).copied().unwrap_or(0)).min();
        match chunks.iter().find(|chunk| acks.get(&chunk.0).copied().unwrap_or(0) < required) {
            Some(chunk) => Err(NodeError::InsufficientAcks {
                key: ItemKey::references(chunk.0),
                got: acks.get(&chunk.0).copied().unwrap_or(0),
                required,
                failures: describe_failures(&failures),
            }),
            None => Ok(fewest.unwrap_or(usize::MAX)),
        }
    }

    /// Sends `sets` to `peer`; returns the ids whose chunk it does not hold.
    async fn refer_on(&self, peer: &PeerKey, sets: Vec<(Hash32, References)>) -> Result<Vec<Hash32>, String> {
        if peer == self.local_peer() {
            return self.refer_local(sets).await.map_err(|e| e.to_string());
        }
        self.call(peer, Request::Refer { sets }, |answer| match answer {
            Response::Referred { without_chunk } => Ok(without_chunk),
            other => Err(other),
        })
        .await
    }

    /// Writes items that share one id (hence their R closest peers) to those peers, one
    /// synced batch each, and returns once `consistency` is met. The remaining writes go
    /// on in the background; a node-wide limit on outstanding writes keeps slow replicas
    /// from piling up chunks in memory.
    ///
    /// A replica that kept a newer record of the batch's name (even one binding the same object) did
    /// not take the write. If any answered so before the level was met, the newest such
    /// record comes back in [`Replicated::newer`], instead of an error, even if the level
    /// was met: the write is older than something a holder has.
    pub(crate) async fn replicate(
        &self,
        items: Vec<(ItemKey, Bytes)>,
        consistency: Consistency,
    ) -> Result<Replicated, NodeError> {
        let key = items.first().expect("something to replicate").0;
        let sent_name: Option<NameRecord> = items
            .iter()
            .find(|(item, _)| item.kind == ItemKind::Name)
            .map(|(_, value)| codec::decode(value).expect("a record we encoded"));
        let replicas = self.inner.config.replication_factor;
        let required = consistency.required(replicas);
        let targets = self.placement(&key).await?.current().to_vec();
        let mut failures: Vec<_> = self.placement_shortfall(&targets).into_iter().collect();

        let (done_tx, mut done) = mpsc::channel(targets.len().max(1));
        for peer in targets {
            let slot = self.inner.write_slots.clone().acquire_owned().await.expect("never closed");
            let (node, items, done_tx) = (self.clone(), items.clone(), done_tx.clone());
            self.inner.tasks.spawn(async move {
                let result = node.store_on(&peer, items).await;
                drop(slot);
                let _ = done_tx.send((peer, result)).await;
            });
        }
        drop(done_tx);

        let mut acks = 0;
        let mut newest: Option<NameRecord> = None;
        while acks < required {
            let Some((peer, result)) = done.recv().await else { break };
            match (result, &sent_name) {
                (Ok(None), _) => acks += 1,
                // Even when it binds the same object: this write's references name its own
                // version, which the newer record has just superseded.
                (Ok(Some(kept)), Some(sent)) if kept.key() == sent.key() => {
                    failures.push((peer.to_string(), format!("kept the newer version {}", kept.version)));
                    newest = Some(newest.map_or(kept.clone(), |known| merge(known, kept)));
                }
                (Ok(Some(_)), _) => failures.push((peer.to_string(), "answered with another name's record".into())),
                (Err(reason), _) => failures.push((peer.to_string(), reason)),
            }
        }
        if newest.is_some() {
            return Ok(Replicated { acks, newer: newest });
        }
        if acks < required {
            return Err(NodeError::InsufficientAcks {
                key,
                got: acks,
                required,
                failures: describe_failures(&failures),
            });
        }
        Ok(Replicated { acks, newer: None })
    }

    /// Stores `items` on `peer`; returns the newer record of their name that it kept, if any.
    pub(crate) async fn store_on(
        &self,
        peer: &PeerKey,
        items: Vec<(ItemKey, Bytes)>,
    ) -> Result<Option<NameRecord>, String> {
        if peer == self.local_peer() {
            return self.store_local(items).await.map_err(|e| e.to_string());
        }
        self.call(peer, Request::Store { items }, |answer| match answer {
            Response::Stored { newer } => Ok(newer),
            other => Err(other),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_sizes(frames: &[usize]) -> Vec<usize> {
        let mut chunker = Chunker::default();
        let mut out = Vec::new();
        for &len in frames {
            chunker.push(Bytes::from(vec![7u8; len]), |c| out.push(c.len()));
        }
        out.extend(chunker.finish().map(|c| c.len()));
        out
    }

    #[test]
    fn chunker_cuts_exact_chunks() {
        assert_eq!(chunk_sizes(&[]), Vec::<usize>::new());
        assert_eq!(chunk_sizes(&[10, 20]), vec![30]);
        assert_eq!(chunk_sizes(&[CHUNK_SIZE]), vec![CHUNK_SIZE]);
        assert_eq!(chunk_sizes(&[CHUNK_SIZE - 1, 2]), vec![CHUNK_SIZE, 1]);
        assert_eq!(chunk_sizes(&[3 * CHUNK_SIZE + 5]), vec![CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 5]);
        assert_eq!(chunk_sizes(&[5, 2 * CHUNK_SIZE]), vec![CHUNK_SIZE, CHUNK_SIZE, 5]);
    }
}
