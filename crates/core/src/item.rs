//! Stored items: what a peer keeps, each verifiable from its key alone.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::NameRecord;
use crate::references::{REFERENCES_MAX, References};
use crate::{CHUNK_SIZE, Hash32, Manifest, ObjectId, codec};

/// The kinds of item a peer stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// Chunk bytes, keyed by their BLAKE3 hash.
    Chunk,
    /// An encoded [`Manifest`], keyed by its object id.
    Manifest,
    /// An encoded [`NameRecord`](crate::names::NameRecord), keyed by
    /// [`name_key`](crate::names::name_key) of its name.
    Name,
    /// An encoded [`References`] set: why the chunk and manifest of its id are kept.
    References,
}

impl ItemKind {
    pub const ALL: [ItemKind; 4] = [ItemKind::Chunk, ItemKind::Manifest, ItemKind::Name, ItemKind::References];

    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Chunk => "chunk",
            ItemKind::Manifest => "manifest",
            ItemKind::Name => "name",
            ItemKind::References => "references",
        }
    }

    /// Whether copies under one key can differ and merge (name records, reference sets),
    /// rather than being the one value their key names (chunks, manifests).
    pub fn is_mergeable(self) -> bool {
        matches!(self, ItemKind::Name | ItemKind::References)
    }
}

/// An item's key. Its 32 bytes are also the key placement hashes: an item lives on the R
/// peers closest to `id`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    pub kind: ItemKind,
    pub id: Hash32,
}

impl ItemKey {
    pub fn chunk(id: crate::ChunkId) -> Self {
        Self { kind: ItemKind::Chunk, id: id.0 }
    }

    pub fn manifest(id: ObjectId) -> Self {
        Self { kind: ItemKind::Manifest, id: id.0 }
    }

    /// The key of the references that keep the chunk and manifest of `id`.
    pub fn references(id: Hash32) -> Self {
        Self { kind: ItemKind::References, id }
    }
}

impl fmt::Debug for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), &hex::encode(self.id)[..12])
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), hex::encode(self.id))
    }
}

/// Why bytes are not what their key says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("hash mismatch: expected {}, got {}", hex::encode(expected), hex::encode(actual))]
    Mismatch { expected: Hash32, actual: Hash32 },
    #[error("wrong length: expected {expected} bytes, got {actual}")]
    Length { expected: usize, actual: usize },
    #[error("chunk of {0} bytes is over the {CHUNK_SIZE}-byte chunk size")]
    ChunkTooLarge(usize),
    #[error("manifest of {size} bytes cannot have {chunks} chunks")]
    ManifestShape { size: u64, chunks: usize },
    #[error("undecodable item: {0}")]
    Decode(#[from] codec::CodecError),
    #[error("a reference set must hold 1 to {REFERENCES_MAX} entries, not {0}")]
    ReferencesShape(usize),
    #[error(transparent)]
    ClockAhead(#[from] crate::names::ClockAhead),
}

/// Checks that `value` is the item `key` names.
pub fn verify_item(key: &ItemKey, value: &[u8]) -> Result<(), VerifyError> {
    match key.kind {
        ItemKind::Chunk => {
            if value.len() > CHUNK_SIZE {
                return Err(VerifyError::ChunkTooLarge(value.len()));
            }
            let actual = *blake3::hash(value).as_bytes();
            if actual != key.id {
                return Err(VerifyError::Mismatch { expected: key.id, actual });
            }
            Ok(())
        }
        ItemKind::Manifest => codec::decode::<Manifest>(value)?.verify(&ObjectId(key.id)),
        ItemKind::Name => {
            let record: NameRecord = codec::decode(value)?;
            let actual = record.key().id;
            if actual != key.id {
                return Err(VerifyError::Mismatch { expected: key.id, actual });
            }
            Ok(())
        }
        // Nothing in a reference set can be checked against its key: only its shape.
        ItemKind::References => {
            let set: References = codec::decode(value)?;
            if set.is_empty() || set.len() > REFERENCES_MAX {
                return Err(VerifyError::ReferencesShape(set.len()));
            }
            Ok(())
        }
    }
}

/// What a store keeps when a verified value arrives for a key that holds a verified one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    Old,
    New,
    /// Both merged into a value that is neither (reference sets).
    Merged(Vec<u8>),
}

/// Which copy a store keeps when a verified `new` value arrives for a key that holds a
/// verified `old` one. Chunks and manifests are immutable: the first verified copy stays
/// (a second manifest for one object, valid as far as its key can tell, must not displace
/// a good one). Name records are versioned: the winner of the merge stays. Reference sets
/// merge entry by entry.
pub fn resolve(key: &ItemKey, old: &[u8], new: &[u8]) -> Kept {
    match key.kind {
        ItemKind::Chunk | ItemKind::Manifest => Kept::Old,
        ItemKind::Name => match (codec::decode::<NameRecord>(old), codec::decode::<NameRecord>(new)) {
            (Ok(old), Ok(new)) if new.wins_over(&old) => Kept::New,
            (Ok(_), _) => Kept::Old,
            (Err(_), _) => Kept::New,
        },
        ItemKind::References => match (codec::decode::<References>(old), codec::decode::<References>(new)) {
            (Ok(mut merged), Ok(new_set)) => {
                merged.merge(&new_set);
                let merged = codec::encode(&merged);
                if merged == old {
                    Kept::Old
                } else if merged == new {
                    Kept::New
                } else {
                    Kept::Merged(merged)
                }
            }
            (Ok(_), _) => Kept::Old,
            (Err(_), _) => Kept::New,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkRef;

    #[test]
    fn chunk_items_verify_by_hash() {
        let key = ItemKey::chunk(blake3::hash(b"abc").into());
        assert_eq!(verify_item(&key, b"abc"), Ok(()));
        assert!(verify_item(&key, b"abd").is_err());
    }

    #[test]
    fn manifest_items_verify_against_their_object() {
        let bytes = b"hello shoal";
        let manifest = Manifest { size: bytes.len() as u64, chunks: vec![ChunkRef::compute(0, bytes)] };
        let key = ItemKey::manifest(blake3::hash(bytes).into());
        let encoded = codec::encode(&manifest);
        assert_eq!(verify_item(&key, &encoded), Ok(()));
        assert!(verify_item(&key, &encoded[1..]).is_err());
        let other = ItemKey::manifest(blake3::hash(b"other").into());
        assert!(verify_item(&other, &encoded).is_err());
    }
}
