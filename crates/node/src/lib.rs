//! Shoal's replica logic: where items go, how a put and a get are coordinated, what a
//! consistency level waits for, and how requests from other peers are answered.
//!
//! The peer whose API received a request coordinates it (leaderless, as in Dynamo). A
//! [`Node`] is generic over the [`Store`](shoal_store::Store) it keeps items in and the
//! [`Network`] it reaches other peers through, so the logic is tested with fakes and
//! libp2p plugs in from outside.
//!
//! Architecture invariant: no HTTP, no clap or TOML, no libp2p types; disk work runs on the
//! blocking pool, never on the async workers.

mod calls;
mod clock;
mod collect;
mod config;
mod error;
mod index;
mod listing;
mod local;
mod membership;
mod names;
mod network;
mod node;
mod policy;
mod read;
mod repair;
mod replicate;
mod rpc;
mod serve;
mod tasks;
mod worker;
mod write;

#[cfg(test)]
mod tests;

pub use clock::PeerClock;
pub use config::NodeConfig;
pub use error::NodeError;
pub use listing::NamePage;
pub use names::NameInfo;
pub use network::{Network, NetworkError};
pub use node::{Node, NodeStatus};
pub use repair::RepairStatus;
pub use worker::{WorkerState, WorkerStatus};
pub use write::PutReceipt;
