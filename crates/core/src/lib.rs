//! Shoal's pure core: the vocabulary every other crate speaks.
//!
//! Ids and hashing ([`ObjectId`], [`ChunkId`], [`chunking`]), manifests ([`Manifest`]),
//! stored items ([`ItemKey`]), placement math ([`placement::closest`]), consistency levels,
//! the wire messages peers exchange ([`wire`]), the settings peers must share
//! ([`settings`]) and the one codec that encodes them ([`codec`]).
//!
//! Architecture invariant: no I/O, no async runtime, no libp2p, no RocksDB. Everything here
//! is a pure function of its inputs, so it is tested exhaustively and shared by all crates.

pub mod chunking;
pub mod codec;
mod consistency;
pub mod digest;
mod id;
mod item;
mod manifest;
pub mod names;
mod network;
pub mod placement;
pub mod references;
pub mod settings;
pub mod wire;

pub use chunking::CHUNK_SIZE;
pub use consistency::{Consistency, ParseConsistencyError};
pub use id::{ChunkId, Hash32, ObjectId, ParseIdError};
pub use item::{ItemKey, ItemKind, Kept, VerifyError, resolve, verify_item};
pub use manifest::{ChunkRef, MAX_OBJECT_SIZE, Manifest};
pub use network::NetworkStatus;
pub use placement::PeerKey;
