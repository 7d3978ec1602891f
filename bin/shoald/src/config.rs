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
    /// How long a disconnected peer still counts as a holder before repair replaces it.
    #[arg(long, env = "SHOAL_FAILURE_GRACE_MS")]
    pub failure_grace_ms: Option<u64>,
    /// Time between anti-entropy rounds when nothing changes.
    #[arg(long, env = "SHOAL_ANTI_ENTROPY_INTERVAL_MS")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// How long every reference to a manifest or chunk must have been dead before the
    /// item is deleted.
    #[arg(long, env = "SHOAL_GC_GRACE_MS")]
    pub gc_grace_ms: Option<u64>,
    /// Time between collection rounds (at most a third of the grace period).
    #[arg(long, env = "SHOAL_GC_INTERVAL_MS")]
    pub gc_interval_ms: Option<u64>,
    /// Serve POST /v1/debug/corrupt/{kind}/{id}, which damages a local item: for tests
    /// and repair drills only.
    #[arg(long, env = "SHOAL_FAULT_INJECTION")]
    pub fault_injection: bool,
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
    pub failure_grace_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub repair_concurrency: usize,
    pub repair_bytes_per_sec: u64,
    pub scrub_bytes_per_sec: u64,
    pub scrub_pause_secs: u64,
    pub tombstone_lifetime_secs: u64,
    pub gc_grace_ms: u64,
    pub gc_interval_ms: u64,
    pub upload_lifetime_secs: u64,
    pub fault_injection: bool,
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
            failure_grace_ms: 30_000,
            anti_entropy_interval_ms: 30_000,
            repair_concurrency: 4,
            repair_bytes_per_sec: 64 << 20,
            scrub_bytes_per_sec: 8 << 20,
            scrub_pause_secs: 3600,
            tombstone_lifetime_secs: 7 * 24 * 3600,
            gc_grace_ms: 3_600_000,
            gc_interval_ms: 300_000,
            upload_lifetime_secs: 24 * 3600,
            fault_injection: false,
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
        if let Some(grace) = args.failure_grace_ms {
            config.failure_grace_ms = grace;
        }
        if let Some(interval) = args.anti_entropy_interval_ms {
            config.anti_entropy_interval_ms = interval;
        }
        if let Some(grace) = args.gc_grace_ms {
            config.gc_grace_ms = grace;
        }
        if let Some(interval) = args.gc_interval_ms {
            config.gc_interval_ms = interval;
        }
        config.fault_injection |= args.fault_injection;
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
        // Rounds keep connections to counted peers busy; idle ones close after 10 minutes.
        anyhow::ensure!(
            (1..=300_000).contains(&self.anti_entropy_interval_ms),
            "anti_entropy_interval_ms must be 1 to 300000"
        );
        anyhow::ensure!((1..=256).contains(&self.repair_concurrency), "repair_concurrency must be 1 to 256");
        anyhow::ensure!(self.repair_bytes_per_sec > 0, "repair_bytes_per_sec must be positive");
        anyhow::ensure!(
            self.gc_interval_ms > 0 && self.gc_interval_ms * 3 <= self.gc_grace_ms,
            "gc_interval_ms must be positive and at most a third of gc_grace_ms"
        );
        anyhow::ensure!(self.scrub_bytes_per_sec > 0, "scrub_bytes_per_sec must be positive");
        anyhow::ensure!(self.upload_lifetime_secs > 0, "upload_lifetime_secs must be positive");
        anyhow::ensure!(!self.listen.is_empty(), "at least one listen address is needed");
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn node_config(&self) -> shoal_node::NodeConfig {
        shoal_node::NodeConfig {
            replication_factor: self.replication_factor,
            chunks_in_flight: self.chunks_in_flight,
            failure_grace: Duration::from_millis(self.failure_grace_ms),
            anti_entropy_interval: Duration::from_millis(self.anti_entropy_interval_ms),
            repair_concurrency: self.repair_concurrency,
            repair_bytes_per_sec: self.repair_bytes_per_sec,
            scrub_bytes_per_sec: self.scrub_bytes_per_sec,
            scrub_pause: Duration::from_secs(self.scrub_pause_secs),
            tombstone_lifetime: Duration::from_secs(self.tombstone_lifetime_secs),
            gc_grace: Duration::from_millis(self.gc_grace_ms),
            gc_interval: Duration::from_millis(self.gc_interval_ms),
            upload_lifetime: Duration::from_secs(self.upload_lifetime_secs),
        }
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
