//! The manifest: an object's size and its chunks, verifiable against the object id alone.

use serde::{Deserialize, Serialize};

use crate::chunking::{CHUNK_SIZE, chunk_count, chunk_cv, root_from_cvs};
use crate::{ChunkId, Hash32, ObjectId, VerifyError};

/// Largest object accepted: 64 GiB, so a manifest (64 bytes a chunk) stays under 4 MiB
/// and fits one wire frame.
pub const MAX_OBJECT_SIZE: u64 = 64 << 30;

/// One chunk of an object, as the manifest lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Standalone hash: the chunk's key in the store.
    pub id: ChunkId,
    /// Chaining value at the chunk's position in its object: binds it to the object id.
    pub cv: Hash32,
}

impl ChunkRef {
    /// Chunk `index` of an object, from its bytes.
    pub fn compute(index: u64, bytes: &[u8]) -> Self {
        Self { id: blake3::hash(bytes).into(), cv: chunk_cv(index, bytes) }
    }
}

/// An object's size and its chunks in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

impl Manifest {
    /// The object id these chunks hash to, or why the manifest is inconsistent.
    ///
    /// The size is bound by the chunk count here and to the byte by the last chunk's
    /// length, which [`Manifest::verify_chunk`] checks.
    pub fn object_id(&self) -> Result<ObjectId, VerifyError> {
        if self.size > MAX_OBJECT_SIZE || chunk_count(self.size) != self.chunks.len() as u64 {
            return Err(VerifyError::ManifestShape { size: self.size, chunks: self.chunks.len() });
        }
        Ok(match self.chunks.as_slice() {
            [] => ObjectId::of_empty(),
            // A single chunk at offset zero is the whole object: its hash is the root.
            [only] => ObjectId(only.id.0),
            chunks => root_from_cvs(&chunks.iter().map(|c| c.cv).collect::<Vec<_>>()),
        })
    }

    /// Checks that this manifest describes exactly the object `id`.
    pub fn verify(&self, id: &ObjectId) -> Result<(), VerifyError> {
        let actual = self.object_id()?;
        if actual != *id {
            return Err(VerifyError::Mismatch { expected: id.0, actual: actual.0 });
        }
        Ok(())
    }

    /// Byte offset and length of chunk `index`.
    pub fn chunk_span(&self, index: usize) -> (u64, usize) {
        let offset = index as u64 * CHUNK_SIZE as u64;
        (offset, (self.size - offset).min(CHUNK_SIZE as u64) as usize)
    }

    /// Checks that `bytes` are chunk `index` of this (verified) manifest's object, and
    /// also the chunk its id names: the id was fetched by, but only the chaining value is
    /// bound to the object id, so a manifest with wrong chunk ids is caught here.
    pub fn verify_chunk(&self, index: usize, bytes: &[u8]) -> Result<(), VerifyError> {
        let (_, expected_len) = self.chunk_span(index);
        if bytes.len() != expected_len {
            return Err(VerifyError::Length { expected: expected_len, actual: bytes.len() });
        }
        let chunk = &self.chunks[index];
        let mismatch = |expected: Hash32, actual: Hash32| {
            if expected == actual { Ok(()) } else { Err(VerifyError::Mismatch { expected, actual }) }
        };
        mismatch(chunk.id.0, *blake3::hash(bytes).as_bytes())?;
        if self.chunks.len() > 1 {
            mismatch(chunk.cv, chunk_cv(index as u64, bytes))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn manifest_of(bytes: &[u8]) -> Manifest {
        let chunks =
            bytes.chunks(CHUNK_SIZE).enumerate().map(|(i, chunk)| ChunkRef::compute(i as u64, chunk)).collect();
        Manifest { size: bytes.len() as u64, chunks }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 4093) as u8).collect()
    }

    #[test]
    fn object_id_is_blake3_of_the_bytes() {
        const MIB: usize = CHUNK_SIZE;
        for len in [0, 1, 1023, 1024, MIB - 1, MIB, MIB + 1, 5 * MIB + 17] {
            let bytes = pattern(len);
            let manifest = manifest_of(&bytes);
            let expected = ObjectId::from(blake3::hash(&bytes));
            assert_eq!(manifest.object_id(), Ok(expected), "size {len}");
            for (i, chunk) in bytes.chunks(MIB).enumerate() {
                assert_eq!(manifest.verify_chunk(i, chunk), Ok(()), "size {len} chunk {i}");
            }
        }
    }

    #[test]
    fn altered_chunk_value_is_rejected() {
        let bytes = pattern(3 * CHUNK_SIZE + 5);
        let id = ObjectId::from(blake3::hash(&bytes));
        let mut manifest = manifest_of(&bytes);
        manifest.chunks[1].cv[7] ^= 1;
        assert!(matches!(manifest.verify(&id), Err(VerifyError::Mismatch { .. })));

        let mut single = manifest_of(b"tiny");
        single.chunks[0].id.0[0] ^= 1;
        assert!(single.verify(&blake3::hash(b"tiny").into()).is_err());
    }

    #[test]
    fn wrong_chunk_bytes_are_rejected() {
        let bytes = pattern(2 * CHUNK_SIZE + 1);
        let manifest = manifest_of(&bytes);
        let mut chunk = bytes[..CHUNK_SIZE].to_vec();
        chunk[100] ^= 0xff;
        assert!(manifest.verify_chunk(0, &chunk).is_err());
        // Right bytes at the wrong position are wrong too.
        assert!(manifest.verify_chunk(1, &bytes[..CHUNK_SIZE]).is_err());
        assert!(manifest.verify_chunk(2, &[]).is_err());
    }

    #[test]
    fn chunks_must_match_their_ids_too() {
        let bytes = pattern(2 * CHUNK_SIZE + 9);
        let mut manifest = manifest_of(&bytes);
        manifest.chunks[1].id.0[3] ^= 1;
        assert_eq!(manifest.object_id(), Ok(blake3::hash(&bytes).into()), "ids are not bound to the object id");
        assert!(manifest.verify_chunk(1, &bytes[CHUNK_SIZE..2 * CHUNK_SIZE]).is_err());
    }

    #[test]
    fn size_must_match_chunk_count() {
        let bytes = pattern(CHUNK_SIZE + 1);
        let mut manifest = manifest_of(&bytes);
        manifest.size = 3 * CHUNK_SIZE as u64;
        assert!(matches!(manifest.object_id(), Err(VerifyError::ManifestShape { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_size_hashes_like_b3sum(len in 0usize..(4 * CHUNK_SIZE + 3), seed: u8) {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            prop_assert_eq!(manifest_of(&bytes).object_id(), Ok(blake3::hash(&bytes).into()));
        }
    }
}
