//! 32-byte ids: BLAKE3 hashes shown as 64 lowercase hex characters, like `b3sum`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte hash.
pub type Hash32 = [u8; 32];

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed id {0:?}: expected 64 hex characters (a BLAKE3 hash, as b3sum prints)")]
pub struct ParseIdError(pub String);

fn parse_hash32(text: &str) -> Result<Hash32, ParseIdError> {
    let mut out = [0u8; 32];
    if text.len() != 64 || hex::decode_to_slice(text, &mut out).is_err() {
        return Err(ParseIdError(text.chars().take(80).collect()));
    }
    Ok(out)
}

/// Defines a hash newtype with hex display and parsing, and serde that is hex in
/// human-readable formats (JSON) and raw bytes in binary ones (the wire).
macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Hash32);

        impl $name {
            pub fn as_bytes(&self) -> &Hash32 {
                &self.0
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                parse_hash32(text).map(Self)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(hash: blake3::Hash) -> Self {
                Self(*hash.as_bytes())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(serializer)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    let text = String::deserialize(deserializer)?;
                    text.parse().map_err(serde::de::Error::custom)
                } else {
                    Hash32::deserialize(deserializer).map(Self)
                }
            }
        }
    };
}

hash_id! {
    /// An object's id: the BLAKE3 hash of all its bytes, exactly what `b3sum` prints.
    ObjectId
}

hash_id! {
    /// A chunk's id: the BLAKE3 hash of the chunk's bytes on their own. Content-addressed,
    /// so identical chunks of different objects are stored once.
    ChunkId
}

impl ObjectId {
    /// The id of the empty object.
    pub fn of_empty() -> Self {
        blake3::hash(&[]).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ObjectId::from(blake3::hash(b"shoal"));
        assert_eq!(id.to_string().parse::<ObjectId>(), Ok(id));
        assert_eq!(id.to_string(), blake3::hash(b"shoal").to_hex().as_str());
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad:?} parsed");
        }
    }
}
