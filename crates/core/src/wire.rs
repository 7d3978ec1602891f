//! The messages of Shoal's transfer protocol (`/shoal/transfer/1`), one request and one
//! response per stream.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ItemKey;

/// What one peer asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store this item durably; answer [`Response::Stored`] once its write is synced.
    Store { key: ItemKey, value: Bytes },
    /// Send this item if you hold it.
    Fetch { key: ItemKey },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The item is on disk, write-ahead log synced.
    Stored,
    /// The item, or `None` when this peer does not hold it.
    Item(Option<Bytes>),
    /// The request failed on the remote side.
    Failed(String),
}
