//! Placement: an item lives on the R peers closest to its key.
//!
//! Distance is Kademlia's, exactly as libp2p's `kbucket::Key` computes it: the XOR of the
//! SHA-256 images of the two byte strings (a peer id's multihash bytes, an item key's
//! bytes). Using kad's own metric means the peers a kad lookup converges on and the peers
//! placement picks are the same peers; `shoal-net` has a test proving the two agree.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::Hash32;

/// Most peers one Kademlia lookup returns: kad's bucket size k. A lookup that ran to its
/// end and returned fewer found every reachable peer, so its answer holds for every key.
pub const LOOKUP_PEERS_MAX: usize = 20;

/// What a DHT lookup found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The peers that answered, closest first, the asking peer excluded.
    pub peers: Vec<PeerKey>,
    /// The lookup ran to its end. One that timed out found some of the closest peers,
    /// maybe not all, and says nothing about the rest of the network.
    pub finished: bool,
}

impl Lookup {
    /// Whether the lookup found every reachable peer: it ran to its end and found fewer
    /// than it could have returned.
    pub fn found_everyone(&self) -> bool {
        self.finished && self.peers.len() < LOOKUP_PEERS_MAX
    }
}

/// A point in the key space: the SHA-256 image of some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(Hash32);

impl KeyHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn as_bytes(&self) -> &Hash32 {
        &self.0
    }

    pub fn distance(&self, other: &KeyHash) -> Distance {
        Distance(std::array::from_fn(|i| self.0[i] ^ other.0[i]))
    }
}

/// XOR distance, ordered as a 256-bit big-endian number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Distance(pub Hash32);

/// A peer as placement sees it: the bytes of its libp2p peer id, shown in base58 as libp2p
/// shows peer ids.
#[derive(Clone)]
pub struct PeerKey {
    bytes: Arc<[u8]>,
    hash: KeyHash,
}

impl PeerKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { bytes: bytes.into(), hash: KeyHash::of(bytes) }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn key_hash(&self) -> &KeyHash {
        &self.hash
    }

    pub fn distance_to(&self, key: &KeyHash) -> Distance {
        self.hash.distance(key)
    }
}

impl PartialEq for PeerKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for PeerKey {}

impl std::hash::Hash for PeerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes.hash(state)
    }
}

impl PartialOrd for PeerKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PeerKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl fmt::Display for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.bytes).into_string())
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.to_string();
        // The tail of a base58 peer id is what distinguishes peers; the head is the
        // multihash prefix every ed25519 peer shares.
        write!(f, "peer:{}", &text[text.len().saturating_sub(8)..])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed peer id {0:?}: expected base58")]
pub struct ParsePeerKeyError(String);

impl FromStr for PeerKey {
    type Err = ParsePeerKeyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(text).into_vec().map_err(|_| ParsePeerKeyError(text.into()))?;
        Ok(Self::from_bytes(&bytes))
    }
}

/// The `r` peers closest to `key`, closest first; duplicates count once.
pub fn closest<'a>(key: &[u8], peers: impl IntoIterator<Item = &'a PeerKey>, r: usize) -> Vec<PeerKey> {
    let target = KeyHash::of(key);
    let mut ranked: Vec<(Distance, &PeerKey)> =
        peers.into_iter().map(|peer| (peer.distance_to(&target), peer)).collect();
    ranked.sort_unstable_by_key(|(distance, _)| *distance);
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(r).map(|(_, peer)| peer.clone()).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Peers made from small numbers, for tests here and in `digest`.
    pub(crate) fn peers(seeds: &[u32]) -> Vec<PeerKey> {
        seeds.iter().map(|seed| PeerKey::from_bytes(&seed.to_be_bytes())).collect()
    }

    proptest! {
        #[test]
        fn chosen_are_the_r_smallest_distances(
            seeds in proptest::collection::hash_set(any::<u32>(), 0..40),
            key: [u8; 32],
            r in 0usize..8,
        ) {
            let all = peers(&seeds.into_iter().collect::<Vec<_>>());
            let chosen = closest(&key, &all, r);
            prop_assert_eq!(chosen.len(), r.min(all.len()));
            let target = KeyHash::of(&key);
            let worst_chosen = chosen.iter().map(|p| p.distance_to(&target)).max();
            for peer in all.iter().filter(|p| !chosen.contains(p)) {
                prop_assert!(Some(peer.distance_to(&target)) > worst_chosen);
            }
            let distances: Vec<_> = chosen.iter().map(|p| p.distance_to(&target)).collect();
            prop_assert!(distances.windows(2).all(|w| w[0] < w[1]));
        }

        #[test]
        fn input_order_does_not_matter(
            seeds in proptest::collection::vec(any::<u32>(), 0..40),
            key: [u8; 32],
            r in 0usize..8,
        ) {
            let forward = peers(&seeds);
            let mut backward = forward.clone();
            backward.reverse();
            let mut doubled = forward.clone();
            doubled.extend(forward.iter().cloned());
            prop_assert_eq!(closest(&key, &forward, r), closest(&key, &backward, r));
            prop_assert_eq!(closest(&key, &forward, r), closest(&key, &doubled, r));
        }
    }

    #[test]
    fn peer_keys_round_trip_through_base58() {
        let peer = PeerKey::from_bytes(b"\x00\x24\x08\x01\x12\x20some-peer-bytes");
        assert_eq!(peer.to_string().parse::<PeerKey>(), Ok(peer));
    }
}
