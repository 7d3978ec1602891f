//! Settings: defaults, then an optional TOML file, then `SHOAL_*` environment variables,
//! then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

/// The Shoal peer daemon.
#[derive(Debug, Parser)]
#[command(name = "shoald", version, about)]
pub struct Args {
    /// TOML file with any of the settings below (flags and environment win over it).
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the identity and the store live.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// libp2p listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001.
    #[arg(long, env = "SHOAL_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Peer to join through (repeatable), e.g. /ip4/10.0.0.1/tcp/4001/p2p/12D3Koo...
    #[arg(long, env = "SHOAL_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Address of the HTTP API.
    #[arg(long, env = "SHOAL_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// Replication factor R; must be the same on every peer of a network.
    #[arg(long, env = "SHOAL_REPLICATION_FACTOR")]
    pub replication_factor: Option<usize>,
}

/// Every setting, with its default. Unknown keys in the TOML file are errors, so a typo
/// never silently falls back to a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub api_addr: SocketAddr,
    pub replication_factor: usize,
    pub chunks_in_flight: usize,
    pub request_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("shoal-data"),
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            bootstrap: Vec::new(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            replication_factor: 3,
            chunks_in_flight: 8,
            request_timeout_secs: 30,
        }
    }
}

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        if let Some(dir) = args.data_dir {
            config.data_dir = dir;
        }
        if !args.listen.is_empty() {
            config.listen = args.listen;
        }
        if !args.bootstrap.is_empty() {
            config.bootstrap = args.bootstrap;
        }
        if let Some(addr) = args.api_addr {
            config.api_addr = addr;
        }
        if let Some(r) = args.replication_factor {
            config.replication_factor = r;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.message()))
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=16).contains(&self.replication_factor), "replication factor must be 1 to 16");
        anyhow::ensure!((1..=256).contains(&self.chunks_in_flight), "chunks_in_flight must be 1 to 256");
        anyhow::ensure!(self.request_timeout_secs > 0, "request_timeout_secs must be positive");
        anyhow::ensure!(!self.listen.is_empty(), "at least one listen address is needed");
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("shoald").chain(extra.iter().copied()))
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(&path, "replication_factor = 5\napi_addr = \"127.0.0.1:9000\"\n").unwrap();
        let config =
            Config::from_args(args(&["--config", path.to_str().unwrap(), "--replication-factor", "2"])).unwrap();
        assert_eq!(config.replication_factor, 2);
        assert_eq!(config.api_addr.port(), 9000);
    }

    #[test]
    fn typos_in_the_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(&path, "replicaton_factor = 5\n").unwrap();
        let error = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err().to_string();
        assert!(error.contains("unknown field `replicaton_factor`"), "{error}");
    }
}
