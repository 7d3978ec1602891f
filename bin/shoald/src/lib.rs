//! The Shoal peer daemon: configuration, wiring of store, network, node and API, and a
//! clean shutdown. A library so tests can run many daemons in one process.

pub mod config;
mod daemon;
mod data_dir;
pub mod limits;
mod network;

pub use config::{Args, Command, Config};
pub use daemon::Daemon;
