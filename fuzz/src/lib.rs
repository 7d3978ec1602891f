//! What each fuzz target checks, one function per decoder that takes bytes from outside.
//! Each must refuse bad bytes with an error, never panic, and never accept something it
//! would not give back: whatever decodes is checked against what the rest of Shoal
//! assumes of it (it encodes back to itself, it verifies under its own key, and so on).

use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use shoal_api::range::{RangeRequest, parse_range};
use shoal_core::chunking::chunk_count;
use shoal_core::codec::{self, MAX_MESSAGE_BYTES};
use shoal_core::names::{self, NameRecord};
use shoal_core::references::References;
use shoal_core::settings::Announcement;
use shoal_core::{Consistency, ItemKey, ItemKind, Kept, Manifest, ObjectId, resolve, verify_item};
use shoal_net::TransferCodec;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/transfer");

/// A codec whose budget holds two whole messages: what was read and its reread.
fn transfer_codec() -> TransferCodec {
    TransferCodec::new(2 * MAX_MESSAGE_BYTES)
}

/// A stream's bytes, read as a peer's request: refused, or a request that is written
/// and read back as itself.
pub fn transfer_request(bytes: &[u8]) {
    let mut codec = transfer_codec();
    let Ok(request) = block_on(codec.read_request(&PROTOCOL, &mut Cursor::new(bytes))) else { return };
    let mut written = Cursor::new(Vec::new());
    block_on(codec.write_request(&PROTOCOL, &mut written, request.clone())).expect("memory takes every write");
    let reread = block_on(codec.read_request(&PROTOCOL, &mut Cursor::new(written.into_inner())));
    assert_eq!(reread.expect("what was written reads back"), request);
}

/// The same for an answer.
pub fn transfer_response(bytes: &[u8]) {
    let mut codec = transfer_codec();
    let Ok(response) = block_on(codec.read_response(&PROTOCOL, &mut Cursor::new(bytes))) else { return };
    let mut written = Cursor::new(Vec::new());
    block_on(codec.write_response(&PROTOCOL, &mut written, response.clone())).expect("memory takes every write");
    let reread = block_on(codec.read_response(&PROTOCOL, &mut Cursor::new(written.into_inner())));
    assert_eq!(reread.expect("what was written reads back"), response);
}

/// A stored manifest: one that decodes and is consistent verifies as the item of its
/// object id, and every chunk it names has a span inside the object.
pub fn manifest(bytes: &[u8]) {
    let Ok(manifest) = codec::decode::<Manifest>(bytes) else { return };
    assert_eq!(codec::decode::<Manifest>(&codec::encode(&manifest)).ok(), Some(manifest.clone()));
    let Ok(id) = manifest.object_id() else { return };
    verify_item(&ItemKey { kind: ItemKind::Manifest, id: id.0 }, bytes).expect("a consistent manifest verifies");
    assert_eq!(chunk_count(manifest.size), manifest.chunks.len() as u64);
    let mut end = 0;
    for index in 0..manifest.chunks.len() {
        let (offset, len) = manifest.chunk_span(index);
        assert!(offset == end && len > 0, "chunk {index} of {manifest:?}");
        end = offset + len as u64;
    }
    assert_eq!(end, manifest.size);
}

/// A name record, as a store receives it: it verifies under its own name's key, and
/// merging is a choice between the two that both orders agree on. The input is two
/// records, split at its first byte.
pub fn name_record(bytes: &[u8]) {
    let Some((&split, rest)) = bytes.split_first() else { return };
    let (a, b) = rest.split_at((split as usize).min(rest.len()));
    let (Ok(first), Ok(second)) = (codec::decode::<NameRecord>(a), codec::decode::<NameRecord>(b)) else {
        return;
    };
    for (record, encoded) in [(&first, a), (&second, b)] {
        let key = record.key();
        verify_item(&key, encoded).expect("a record verifies under its own name's key");
        assert_eq!(resolve(&key, encoded, encoded), Kept::Old, "a copy displaced by itself");
    }
    assert!(!(first.wins_over(&second) && second.wins_over(&first)), "both win: {first:?} {second:?}");
    let merged = names::merge(first.clone(), second.clone());
    assert_eq!(merged, names::merge(second.clone(), first.clone()));
    assert!(merged == first || merged == second);
}

/// A reference set, as a store receives it: one of a valid shape verifies, merging two
/// is commutative and idempotent, and what a store keeps of the two holds both.
pub fn reference_set(bytes: &[u8]) {
    let Some((&split, rest)) = bytes.split_first() else { return };
    let (a, b) = rest.split_at((split as usize).min(rest.len()));
    let key = ItemKey { kind: ItemKind::References, id: [0; 32] };
    let (Ok(first), Ok(second)) = (codec::decode::<References>(a), codec::decode::<References>(b)) else {
        return;
    };
    if verify_item(&key, a).is_err() || verify_item(&key, b).is_err() {
        return;
    }
    let merged = |x: &References, y: &References| {
        let mut merged = x.clone();
        merged.merge(y);
        merged
    };
    let both = merged(&first, &second);
    assert_eq!(both, merged(&second, &first));
    assert_eq!(merged(&both, &second), both);
    let kept = match resolve(&key, a, b) {
        Kept::Old => first.clone(),
        Kept::New => second.clone(),
        Kept::Merged(value) => codec::decode(&value).expect("a merged set decodes"),
    };
    assert_eq!(kept, both);
}

/// What a peer announces through identify: refused, or one that prints back as itself.
pub fn announcement(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Some(announcement) = Announcement::parse(text) else { return };
    assert_eq!(Announcement::parse(&announcement.to_string()), Some(announcement));
    let _ = announcement.settings.validate();
}

/// A `Range` header against an object whose size is the input's first eight bytes: what
/// it asks is all of it, nothing, or a non-empty part inside it.
pub fn range_header(bytes: &[u8]) {
    let Some((size, header)) = bytes.split_first_chunk::<8>() else { return };
    let size = u64::from_le_bytes(*size);
    let Ok(header) = std::str::from_utf8(header) else { return };
    match parse_range(Some(header), size) {
        RangeRequest::Partial(range) => assert!(range.start < range.end && range.end <= size, "{range:?} of {size}"),
        RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
    }
}

/// The files an operator writes, chosen by the first byte: the daemon's TOML config, an
/// API tokens file, a `swarm.key`. Each is accepted or refused with a one-line error.
pub fn config_files(bytes: &[u8]) {
    let Some((&which, text)) = bytes.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let error = match which % 3 {
        0 => shoald::Config::from_toml(text).and_then(|config| config.validate()).err().map(|e| e.to_string()),
        1 => shoal_api::ApiTokens::parse(text, "tokens").err().map(|e| e.to_string()),
        _ => shoal_net::NetworkKey::parse(text, "swarm.key").err().map(|e| e.to_string()),
    };
    if let Some(error) = error {
        assert!(!error.contains('\n'), "a refusal of more than one line: {error:?}");
    }
}

/// What a request's path and query name, as the API parses them: an object id (which
/// prints back as the same hex), a consistency level (likewise), a name (a valid one
/// never reads as an id, and is keyed apart from every object's id).
pub fn api_params(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(id) = text.parse::<ObjectId>() {
        assert_eq!(id.to_string().parse::<ObjectId>().ok(), Some(id));
    }
    if let Ok(level) = text.parse::<Consistency>() {
        assert_eq!(level.to_string().parse::<Consistency>().ok(), Some(level));
    }
    if names::validate_name(text).is_ok() {
        assert!(text.parse::<ObjectId>().is_err());
        assert_eq!(names::name_key(text).kind, ItemKind::Name);
    }
}
