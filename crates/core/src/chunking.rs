//! Cutting objects into chunks and hashing them so that the object id stays `b3sum`'s.
//!
//! BLAKE3 is a tree hash. With 1 MiB chunks (a power of two of BLAKE3's 1 KiB chunks) every
//! chunk is a whole subtree, so its chaining value (`hazmat`) can be computed alone and the
//! chaining values merge to the root: the largest power of two of chunks on the left, the
//! rest on the right, recursively. A manifest of chaining values is therefore checked
//! against the object id before a single chunk is fetched.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};

use crate::{Hash32, ObjectId};

/// Size of every chunk but the last, which may be shorter.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The chaining value of chunk `index` of an object with more than one chunk.
pub fn chunk_cv(index: u64, bytes: &[u8]) -> Hash32 {
    debug_assert!(bytes.len() <= CHUNK_SIZE);
    blake3::Hasher::new().set_input_offset(index * CHUNK_SIZE as u64).update(bytes).finalize_non_root()
}

/// The root hash of an object of two or more chunks, from their chaining values.
pub fn root_from_cvs(cvs: &[Hash32]) -> ObjectId {
    assert!(cvs.len() >= 2, "a root over chaining values needs two or more chunks");
    let split = left_subtree_chunks(cvs.len());
    let left = subtree_cv(&cvs[..split]);
    let right = subtree_cv(&cvs[split..]);
    merge_subtrees_root(&left, &right, Mode::Hash).into()
}

fn subtree_cv(cvs: &[ChainingValue]) -> ChainingValue {
    if let [only] = cvs {
        return *only;
    }
    let split = left_subtree_chunks(cvs.len());
    merge_subtrees_non_root(&subtree_cv(&cvs[..split]), &subtree_cv(&cvs[split..]), Mode::Hash)
}

/// BLAKE3 puts the largest power of two strictly below `chunks` in the left subtree.
fn left_subtree_chunks(chunks: usize) -> usize {
    debug_assert!(chunks >= 2);
    1 << (usize::BITS - 1 - (chunks - 1).leading_zeros())
}

/// How many chunks an object of `size` bytes has.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_subtree_is_largest_power_of_two_below() {
        let expected = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)];
        for (chunks, left) in expected {
            assert_eq!(left_subtree_chunks(chunks), left, "{chunks} chunks");
            let bytes = chunks as u64 * CHUNK_SIZE as u64;
            assert_eq!(blake3::hazmat::left_subtree_len(bytes), left as u64 * CHUNK_SIZE as u64);
        }
    }
}
