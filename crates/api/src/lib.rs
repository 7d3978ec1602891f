//! Shoal's HTTP API: the daemon's routes ([`router`]) and the typed [`Client`] the CLI and
//! the tests use.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/objects?consistency=one\|quorum\|all` | streams the body in; answers the id |
//! | `GET /v1/objects/{id}` (Range) / `HEAD` | streams the object out, verified |
//! | `GET /v1/status` | the peer, its network and its store |
//! | `GET /v1/items` | the items this peer holds (kind and hex key) |
//! | `POST /v1/debug/corrupt/{kind}/{id}` | with `--fault-injection` only: damages a local item |
//! | `GET /metrics` | Prometheus text format |
//!
//! Errors are JSON, `{"error": {"code": "...", "message": "..."}}`, with a stable `code`.
//!
//! Architecture invariant: no RocksDB, no libp2p; the server sees only a
//! [`shoal_node::Node`], the client only HTTP.

mod client;
mod error;
mod metrics;
mod range;
mod server;

pub use client::{Client, ClientError, ObjectDownload, ObjectInfo};
pub use error::{ApiError, ErrorCode};
pub use server::{LocalItem, Options, StatusReport, router};
pub use shoal_node::PutReceipt;
pub use shoal_node::RepairStatus;

/// Response header carrying an object's chunk count.
pub const CHUNKS_HEADER: &str = "x-shoal-chunks";
