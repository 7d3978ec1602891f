//! Anti-entropy vocabulary: the key space cut into buckets, a 16-ary tree over them, and
//! set fingerprints that can be updated one item at a time.
//!
//! A bucket is the set of keys whose placement hash starts with the same 16 bits. Keys
//! in one bucket are close to the same peers, so for nearly every bucket one set of R
//! peers is responsible for all of its keys ([`bucket_holders`]); two such peers hold
//! exactly the same keys of that bucket once they are in sync. A bucket's fingerprint is
//! the XOR of its items' fingerprints: adding or removing an item is one XOR, and two
//! peers compare whole regions of the key space by comparing XORs of bucket fingerprints.

use serde::{Deserialize, Serialize};

use crate::placement::{KeyHash, PeerKey};
use crate::{ItemKey, ItemKind};

/// Bits of the placement hash that name a bucket.
pub const BUCKET_BITS: u32 = 16;
/// Number of buckets.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Children per tree node: 16, so the tree over 2^16 buckets has depth 4.
pub const TREE_FANOUT_BITS: u32 = 4;
pub const TREE_DEPTH: u8 = (BUCKET_BITS / TREE_FANOUT_BITS) as u8;

/// A bucket of the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bucket(pub u16);

impl Bucket {
    pub fn of(key: &ItemKey) -> Self {
        Self::of_hash(&KeyHash::of(&key.id))
    }

    pub fn of_hash(hash: &KeyHash) -> Self {
        let bytes = hash.as_bytes();
        Self(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// What distinguishes two copies under one key: zero for immutable items (chunks,
/// manifests: a key names exactly one value), a hash of the value for mergeable ones
/// (name records, reference sets), whose contents change under one key.
pub type ContentTag = [u8; 16];

pub fn content_tag(key: &ItemKey, value: &[u8]) -> ContentTag {
    match key.kind {
        ItemKind::Chunk | ItemKind::Manifest => ContentTag::default(),
        ItemKind::Name | ItemKind::References => {
            blake3::hash(value).as_bytes()[..16].try_into().expect("16 of 32 bytes")
        }
    }
}

/// An order-independent fingerprint of a set of items: XOR of per-item fingerprints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    pub fn of(key: &ItemKey, tag: &ContentTag) -> Self {
        let hash = blake3::Hasher::new().update(&[key.kind as u8]).update(&key.id).update(tag).finalize();
        Self(hash.as_bytes()[..16].try_into().expect("16 of 32 bytes"))
    }

    /// Adds or removes (the same operation) a fingerprint.
    pub fn toggle(&mut self, other: &Fingerprint) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a ^= b;
        }
    }
}

/// A node of the tree over buckets: at `depth` d it covers the buckets whose top 4·d bits
/// equal `index`. Depth 0 is the root; depth [`TREE_DEPTH`] nodes are single buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeNode {
    pub depth: u8,
    pub index: u16,
}

impl TreeNode {
    pub const ROOT: TreeNode = TreeNode { depth: 0, index: 0 };

    pub fn is_leaf(self) -> bool {
        self.depth == TREE_DEPTH
    }

    pub fn is_valid(self) -> bool {
        self.depth <= TREE_DEPTH && u32::from(self.index) < 1 << (TREE_FANOUT_BITS * u32::from(self.depth))
    }

    pub fn children(self) -> impl Iterator<Item = TreeNode> {
        debug_assert!(!self.is_leaf());
        let first = u32::from(self.index) << TREE_FANOUT_BITS;
        (0..1u32 << TREE_FANOUT_BITS).map(move |i| TreeNode { depth: self.depth + 1, index: (first + i) as u16 })
    }

    /// The buckets this node covers.
    pub fn buckets(self) -> std::ops::Range<usize> {
        let width = 1usize << (TREE_FANOUT_BITS * u32::from(TREE_DEPTH - self.depth));
        let start = usize::from(self.index) * width;
        start..start + width
    }

    /// Whether `nodes` is a frontier as a comparison asks for one: valid nodes of one
    /// depth in increasing order. They cover each bucket at most once, so answering costs
    /// at most one pass over the index, however the nodes were chosen.
    pub fn is_frontier(nodes: &[TreeNode]) -> bool {
        nodes.iter().all(|node| node.is_valid())
            && nodes.windows(2).all(|pair| pair[0].depth == pair[1].depth && pair[0].index < pair[1].index)
    }
}

/// The R peers responsible for every key of `bucket`, when the same R peers are; `None`
/// when the choice depends on bits below the bucket prefix (two candidates at the cut
/// share their top 16 hash bits), and keys must then be placed one by one.
pub fn bucket_holders<'a>(
    bucket: Bucket,
    peers: impl IntoIterator<Item = &'a PeerKey>,
    r: usize,
) -> Option<Vec<PeerKey>> {
    let prefix_distance = |peer: &PeerKey| {
        let bytes = peer.key_hash().as_bytes();
        u16::from_be_bytes([bytes[0], bytes[1]]) ^ bucket.0
    };
    let mut ranked: Vec<(u16, &PeerKey)> = peers.into_iter().map(|p| (prefix_distance(p), p)).collect();
    ranked.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    if ranked.len() > r && ranked[r - 1].0 == ranked[r].0 {
        return None;
    }
    // Ties inside the chosen set do not matter: the set is the same for every key.
    Some(ranked.into_iter().take(r).map(|(_, peer)| peer.clone()).collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::placement::closest;
    use crate::placement::tests::peers;

    proptest! {
        #[test]
        fn bucket_holders_agree_with_per_key_placement(
            seeds in proptest::collection::hash_set(any::<u32>(), 1..30),
            ids in proptest::collection::vec(any::<[u8; 32]>(), 1..20),
            r in 1usize..5,
        ) {
            let all = peers(&seeds.into_iter().collect::<Vec<_>>());
            for id in ids {
                let key = ItemKey { kind: ItemKind::Chunk, id };
                if let Some(holders) = bucket_holders(Bucket::of(&key), &all, r) {
                    let mut expected = closest(&key.id, &all, r);
                    let mut holders = holders;
                    expected.sort();
                    holders.sort();
                    prop_assert_eq!(holders, expected);
                }
            }
        }
    }

    #[test]
    fn tree_covers_every_bucket_once() {
        let mut covered = vec![0u8; BUCKETS];
        let mut frontier = vec![TreeNode::ROOT];
        while let Some(node) = frontier.pop() {
            assert!(node.is_valid());
            if node.is_leaf() {
                assert_eq!(node.buckets().len(), 1);
                covered[node.buckets().start] += 1;
            } else {
                frontier.extend(node.children());
            }
        }
        assert!(covered.iter().all(|&c| c == 1));
    }

    #[test]
    fn a_frontier_is_one_depth_in_order() {
        let children: Vec<TreeNode> = TreeNode::ROOT.children().collect();
        assert!(TreeNode::is_frontier(&children) && TreeNode::is_frontier(&[TreeNode::ROOT]));
        assert!(TreeNode::is_frontier(&[]));
        assert!(!TreeNode::is_frontier(&[TreeNode::ROOT; 2]), "a duplicate");
        assert!(!TreeNode::is_frontier(&[children[1], children[0]]), "out of order");
        assert!(!TreeNode::is_frontier(&[TreeNode::ROOT, children[0]]), "a node and its child");
        assert!(!TreeNode::is_frontier(&[TreeNode { depth: 1, index: 16 }]), "no such node");
    }

    #[test]
    fn fingerprints_toggle() {
        let a = Fingerprint::of(&ItemKey { kind: ItemKind::Chunk, id: [1; 32] }, &ContentTag::default());
        let b = Fingerprint::of(&ItemKey { kind: ItemKind::Manifest, id: [1; 32] }, &ContentTag::default());
        assert_ne!(a, b);
        let mut set = Fingerprint::default();
        set.toggle(&a);
        set.toggle(&b);
        set.toggle(&a);
        assert_eq!(set, b);
    }
}
