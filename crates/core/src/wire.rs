//! The messages of Shoal's transfer protocol (`/shoal/transfer/9`), one request and one
//! response per stream. Version 2 made [`Request::Store`] carry a batch; version 3 frames
//! item values apart from the rest of a message ([`Payloads`]); version 4 keys pins by
//! their object and answers a store with the newer name record a replica kept; version 5
//! replaced collection marks with reference sets ([`Request::Refer`]); version 6 answers
//! a `Refer` with the ids whose chunk the holder lacks and bounds `Have` to 256 keys;
//! version 7 pages listings ([`Request::ListNames`]); version 8 answers a ping with the
//! peer's wall clock; version 9 makes handoff ask for proofs of possession
//! ([`Request::Prove`], [`Request::Holding`]) instead of `Have`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::{Bucket, ContentTag, Fingerprint, TreeNode};
use crate::names::NameRecord;
use crate::references::References;
use crate::{Hash32, ItemKey, ItemKind};

/// The most items one [`Request::Store`] carries, and so the most item values of any
/// message: one item of each kind, all of one id.
pub const STORE_BATCH_MAX: usize = ItemKind::ALL.len();

/// The most name records one [`Response::Names`] carries: a page of the longest names
/// stays far below the frame limit (a test checks).
pub const LIST_PAGE_MAX: usize = 1000;

/// What a holder of `value` answers to a [`Request::Prove`] with `nonce`: a BLAKE3 hash
/// keyed by the nonce, so that only a peer that can read the bytes now computes it.
pub fn possession_proof(nonce: &Hash32, value: &[u8]) -> Hash32 {
    blake3::keyed_hash(nonce, value).into()
}

/// What one peer asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store these items durably, as one synced write, and answer [`Response::Stored`]
    /// once it is on disk. The items share one id, hence one holder set: an unnamed
    /// object's manifest and pin travel together, with its chunk if it has only one (see
    /// [`Request::is_valid_store`]).
    Store { items: Vec<(ItemKey, Bytes)> },
    /// Send this item if you hold it.
    Fetch { key: ItemKey },
    /// Are you there? Answered with [`Response::Pong`].
    Ping,
    /// Anti-entropy: your fingerprints of these tree nodes, over the buckets (or, in
    /// buckets without a single holder set, the keys) that both of us should hold.
    Digests { nodes: Vec<TreeNode> },
    /// Anti-entropy: every key you hold in these buckets, with its content tag.
    BucketKeys { buckets: Vec<Bucket> },
    /// Handoff: prove that you hold these immutable items by answering
    /// [`possession_proof`] of each with this fresh nonce.
    Prove { nonce: Hash32, keys: Vec<ItemKey> },
    /// Handoff: send this mergeable item (a name record, a reference set) if you hold it,
    /// answered with [`Response::Item`]. A holder may have merged
    /// it with what it had, so its value proves possession, not a digest of ours.
    Holding { key: ItemKey },
    /// Listing: in name order, the first `limit` (at most [`LIST_PAGE_MAX`]) name records
    /// you hold whose names start with `prefix` and come after `after`, tombstones
    /// included (they decide which older bindings are dead). Pins are not listed.
    ListNames { prefix: String, after: Option<String>, limit: u32 },
    /// Merge these references into your reference sets of these ids, as one synced write,
    /// and answer [`Response::Referred`] once it is on disk: a put refers to the chunks of
    /// an object this way, one request per holder, before the object is visible. Only a
    /// holder of the chunk as well counts as an ack, so the answer names the ids whose
    /// chunk you do not hold.
    Refer { sets: Vec<(Hash32, References)> },
}

impl Request {
    /// Whether a [`Request::Store`] is well formed: one to [`STORE_BATCH_MAX`] items that
    /// share one id. Other requests are always well formed here.
    pub fn is_valid_store(&self) -> bool {
        match self {
            Request::Store { items } => {
                (1..=STORE_BATCH_MAX).contains(&items.len()) && items.iter().all(|(key, _)| key.id == items[0].0.id)
            }
            _ => true,
        }
    }
}

/// The item values a message carries. The transfer framing sends them after the encoded
/// rest of the message, so a chunk is never copied into or out of an encoding buffer (the
/// framing copies only values up to 16 KiB, into its head).
pub trait Payloads {
    fn payloads_mut(&mut self) -> Vec<&mut Bytes>;
}

impl Payloads for Request {
    fn payloads_mut(&mut self) -> Vec<&mut Bytes> {
        match self {
            Request::Store { items } => items.iter_mut().map(|(_, value)| value).collect(),
            _ => Vec::new(),
        }
    }
}

impl Payloads for Response {
    fn payloads_mut(&mut self) -> Vec<&mut Bytes> {
        match self {
            Response::Item(Some(value)) => vec![value],
            _ => Vec::new(),
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The items are on disk, write-ahead log synced. A name record among them may have
    /// lost to a newer one already there: that one comes back, so the writer can write
    /// past it.
    Stored {
        newer: Option<NameRecord>,
    },
    /// The item, or `None` when this peer does not hold it.
    Item(Option<Bytes>),
    /// The answering peer's wall clock when it answered, in ms since the Unix epoch: the
    /// asker learns how far apart their clocks are.
    Pong {
        wall_ms: u64,
    },
    Digests(Vec<Fingerprint>),
    Keys(Vec<(ItemKey, ContentTag)>),
    /// One answer per asked key, in order: the proof, or `None` for an item not held.
    Proofs(Vec<Option<Hash32>>),
    /// A page of a listing; `more` if records past the last one match as well.
    Names {
        records: Vec<NameRecord>,
        more: bool,
    },
    Referred {
        without_chunk: Vec<Hash32>,
    },
    /// The request failed on the remote side.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: ItemKind, id: u8) -> (ItemKey, Bytes) {
        (ItemKey { kind, id: [id; 32] }, Bytes::from_static(b"v"))
    }

    #[test]
    fn a_store_batch_shares_one_id() {
        let valid = |items: Vec<(ItemKey, Bytes)>| Request::Store { items }.is_valid_store();
        assert!(valid(vec![item(ItemKind::Chunk, 1)]));
        assert!(valid(vec![item(ItemKind::Chunk, 1), item(ItemKind::Manifest, 1)]));
        assert!(!valid(vec![]));
        assert!(!valid(vec![item(ItemKind::Chunk, 1), item(ItemKind::Manifest, 2)]));
        assert!(!valid(vec![item(ItemKind::Chunk, 1); STORE_BATCH_MAX + 1]));
    }

    #[test]
    fn a_page_of_the_longest_names_fits_a_frame() {
        use crate::names::{Binding, NAME_BYTES_MAX, Version};
        let record = |n: usize| NameRecord {
            name: format!("{n:04}").repeat(NAME_BYTES_MAX / 4),
            version: Version { wall_ms: u64::MAX, logical: u32::MAX, writer: u64::MAX },
            binding: Binding::Object { id: crate::ObjectId([0xff; 32]), size: u64::MAX },
        };
        let page = Response::Names { records: (0..LIST_PAGE_MAX).map(record).collect(), more: true };
        let encoded = crate::codec::encode(&page);
        assert!(encoded.len() < crate::codec::MAX_MESSAGE_BYTES / 4, "a page takes {} bytes", encoded.len());
    }
}
