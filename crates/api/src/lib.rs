//! Shoal's HTTP API: the daemon's routes ([`router`]) and the typed [`Client`] the CLI and
//! the tests use.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/objects?consistency=one\|quorum\|all` | streams the body in; answers the id |
//! | `GET /v1/objects/{id}` (Range) / `HEAD` | streams the object out, verified |
//! | `DELETE /v1/objects/{id}?consistency=` | deletes an unnamed object (its pin) |
//! | `PUT /v1/names/{name}?consistency=` | streams the body in and binds the name to it |
//! | `GET` / `HEAD /v1/names/{name}?consistency=` | the named object, with id and version headers |
//! | `DELETE /v1/names/{name}?consistency=` | deletes the name (a tombstone) |
//! | `GET /v1/names?prefix=&after=&limit=` | a page of the live names under a prefix, in order |
//! | `GET /v1/status` | the peer, its network and its store |
//! | `GET /v1/items` | the items this peer holds (kind and hex key) |
//! | `POST /v1/debug/corrupt/{kind}/{id}` | with `--fault-injection` only: damages a local item |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}`, with a stable `code`.
//! With tokens ([`Options::tokens`]) every route needs `Authorization: Bearer TOKEN`:
//! 401 (`unauthorized`) without a valid one, 403 (`forbidden`) for a write with a read token.
//!
//! Architecture invariant: no RocksDB, no libp2p; the server sees only a
//! [`shoal_node::Node`], the client only HTTP.

mod auth;
mod client;
mod error;
mod linger;
mod metrics;
pub mod range;
mod server;

pub use auth::{ApiTokens, TokensError};
pub use client::{Client, ClientError, NameHeaders, ObjectDownload, ObjectInfo};
pub use error::{ApiError, ErrorCode};
pub use server::{LocalItem, NameList, NamedPutReceipt, Options, StatusReport, Unanswered, router};
pub use shoal_node::NameInfo;
pub use shoal_node::PutReceipt;
pub use shoal_node::RepairStatus;

/// Response header carrying an object's chunk count.
pub const CHUNKS_HEADER: &str = "x-shoal-chunks";
/// Response header carrying an object's size in bytes (a range's length is its
/// Content-Length, or the span of its Content-Range).
pub const SIZE_HEADER: &str = "x-shoal-size";
/// Trailer that ends an object's body when it broke off, saying why (to clients that sent
/// `TE: trailers`).
pub const ERROR_TRAILER: &str = "x-shoal-error";
/// Response headers of a named object: its id, the name's version and when it was written
/// (milliseconds since the Unix epoch).
pub const ID_HEADER: &str = "x-shoal-id";
pub const VERSION_HEADER: &str = "x-shoal-version";
pub const MODIFIED_HEADER: &str = "x-shoal-modified-ms";
