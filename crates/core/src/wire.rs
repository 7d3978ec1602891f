//! The messages of Shoal's transfer protocol (`/shoal/transfer/1`), one request and one
//! response per stream.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ItemKey;
use crate::digest::{Bucket, ContentTag, Fingerprint, TreeNode};
use crate::names::NameRecord;

/// What one peer asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store this item durably; answer [`Response::Stored`] once its write is synced.
    Store { key: ItemKey, value: Bytes },
    /// Send this item if you hold it.
    Fetch { key: ItemKey },
    /// Are you there? Answered with [`Response::Pong`].
    Ping,
    /// Anti-entropy: your fingerprints of these tree nodes, over the buckets (or, in
    /// buckets without a single holder set, the keys) that both of us should hold.
    Digests { nodes: Vec<TreeNode> },
    /// Anti-entropy: every key you hold in these buckets, with its content tag.
    BucketKeys { buckets: Vec<Bucket> },
    /// Handoff: which of these items do you hold?
    Have { keys: Vec<ItemKey> },
    /// Listing: the name records you hold whose names start with `prefix`, tombstones
    /// included (they decide which older bindings are dead).
    ListNames { prefix: String },
    /// Collection: these items are still referenced; keep the ones you hold.
    Mark { keys: Vec<ItemKey> },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The item is on disk, write-ahead log synced.
    Stored,
    /// The item, or `None` when this peer does not hold it.
    Item(Option<Bytes>),
    Pong,
    Digests(Vec<Fingerprint>),
    Keys(Vec<(ItemKey, ContentTag)>),
    /// One answer per asked key, in order.
    Have(Vec<bool>),
    Names(Vec<NameRecord>),
    Marked,
    /// The request failed on the remote side.
    Failed(String),
}
