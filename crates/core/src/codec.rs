//! The one binary codec: bincode 2 (pinned), size-limited, no trailing bytes.
//!
//! Everything that crosses the wire or goes to disk as a structure goes through here, so
//! the format can change in one place.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded message: a full manifest (under 4 MiB) or a chunk, with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("our own types always encode")
}

/// How many bytes [`encode`] would write for `value`, counted without writing them.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).expect("our own types always encode");
    size.bytes_written
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    match bytes.len() - read {
        0 => Ok(value),
        extra => Err(CodecError::Trailing(extra)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{Request, Response};
    use crate::{ItemKey, ItemKind};

    proptest! {
        #[test]
        fn requests_round_trip(id: [u8; 32], value: Vec<u8>, fetch: bool) {
            let key = ItemKey { kind: ItemKind::Chunk, id };
            let request = if fetch {
                Request::Fetch { key }
            } else {
                Request::Store { items: vec![(key, value.into())] }
            };
            prop_assert_eq!(encoded_len(&request), encode(&request).len());
            prop_assert_eq!(decode::<Request>(&encode(&request)), Ok(request));
        }

        #[test]
        fn garbage_never_panics(bytes: Vec<u8>) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&Response::Stored { newer: None });
        bytes.push(0);
        assert_eq!(decode::<Response>(&bytes), Err(CodecError::Trailing(1)));
    }
}
