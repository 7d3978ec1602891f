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

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_core::names::{Binding, NameRecord};
use shoal_core::references::{References, Referrer, Upload};
use shoal_core::{CHUNK_SIZE, ChunkId, ChunkRef, Consistency, ItemKey, MAX_OBJECT_SIZE, Manifest, ObjectId, codec};
use shoal_store::Store;

use crate::replicate::Replicated;
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
        // The body is in. From its first `Refer` to its record only this put can record
        // its binding's death if it fails (`abandon`), so a client that hangs up must not
        // cut it short there: the rest runs as the node's own task.
        let node = self.clone();
        let bind = async move { node.write_binding(&name, binding, consistency, Some(&object)).await };
        let stopped = || NodeError::Unavailable { what: format!("object {id}"), failures: "the node stopped".into() };
        let (record, acks) = self.inner.tasks.run_to_end(bind).await.ok_or_else(stopped)??;
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
                let manifest = Manifest { size, chunks: vec![digest] };
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
    async fn digest(index: usize, bytes: Bytes) -> ChunkRef {
        if bytes.len() <= HASH_IN_PLACE_BYTES_MAX {
            return ChunkRef::compute(index as u64, &bytes);
        }
        tokio::task::spawn_blocking(move || ChunkRef::compute(index as u64, &bytes))
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
        Ok((index, digest, replicated.acks))
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
        let chunk_acks = match self.refer(&object.chunks, &chunk_references, consistency).await {
            Ok(acks) => acks,
            Err(error) => return Err(self.abandon(object, referrer, error).await),
        };
        let mut items = object.items.clone();
        items.push((ItemKey::references(object.id.0), codec::encode(&References::of(referrer)).into()));
        let record_item = (record.key(), Bytes::from(codec::encode(record)));
        let mut replicated = if record.key().id == object.id.0 {
            // The record rides in this batch: once it is sent, it may be stored somewhere,
            // so the binding is not abandoned even if the batch fails.
            items.push(record_item);
            self.replicate(items, consistency).await?
        } else {
            let object_acks = match self.replicate(items, consistency).await {
                Ok(replicated) => replicated.acks,
                Err(error) => return Err(self.abandon(object, referrer, error).await),
            };
            let mut replicated = self.replicate(vec![record_item], consistency).await?;
            replicated.acks = replicated.acks.min(object_acks);
            replicated
        };
        replicated.acks = replicated.acks.min(chunk_acks);
        Ok(replicated)
    }

    /// A put that fails before it sent its record will never send it: this coordinator
    /// is the only writer of that version, and no run issues a version twice (the writer
    /// part of versions is random at every start, `node::writer_id`). So the binding it
    /// referred the object's chunks and manifest to is dead, and saying so is the positive
    /// evidence collection needs (otherwise the binding would keep them until the name was
    /// written again). The death goes to every holder of the chunks (one `Refer` per
    /// holder) and of the manifest, at ONE: a death wins every merge, so one copy that
    /// lands spreads with anti-entropy and beats a `Refer` that arrives late. If none lands
    /// (this peer is cut off, or the put is dropped first), the copies stay, as before.
    /// Returns `error`, the put's own.
    async fn abandon(&self, object: &UnboundObject, referrer: Referrer, error: NodeError) -> NodeError {
        let mut dead = References::of(referrer);
        dead.kill(&referrer, self.now_ms());
        let manifest = vec![(ItemKey::references(object.id.0), Bytes::from(codec::encode(&dead)))];
        let (chunks, manifest) = futures::join!(
            async {
                match object.chunks.is_empty() {
                    true => Ok(0),
                    false => self.refer(&object.chunks, &dead, Consistency::One).await,
                }
            },
            self.replicate(manifest, Consistency::One)
        );
        if let Some(failure) = chunks.err().or(manifest.err()) {
            tracing::warn!(object = %object.id, "cannot record that a failed put lets its object go: {failure}");
        }
        error
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
