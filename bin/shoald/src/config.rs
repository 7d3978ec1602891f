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
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Address other peers dial to reach this one (repeatable), e.g.
    /// /ip4/203.0.113.7/tcp/4001; when given, only these are announced.
    #[arg(long = "external-addr", env = "SHOAL_EXTERNAL_ADDR", value_delimiter = ',')]
    pub external_addrs: Vec<String>,
    /// The private network's key (a swarm.key file, made by `shoald keygen`); peers
    /// without it cannot connect. Without one the network is open to any libp2p peer.
    #[arg(long, env = "SHOAL_NETWORK_KEY")]
    pub network_key: Option<PathBuf>,
    /// Address of the HTTP API.
    #[arg(long, env = "SHOAL_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// The API's bearer tokens, one `read TOKEN` or `read-write TOKEN` per line; without
    /// it every request is served.
    #[arg(long, env = "SHOAL_API_TOKENS")]
    pub api_tokens: Option<PathBuf>,
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
    /// How long a put may take: the chunks it wrote are kept for it this long before its
    /// object refers to them, and reclaimed after if it never does.
    #[arg(long, env = "SHOAL_UPLOAD_LIFETIME_SECS")]
    pub upload_lifetime_secs: Option<u64>,
    /// Serve POST /v1/debug/corrupt/{kind}/{id}, which damages a local item: for tests
    /// and repair drills only.
    #[arg(long, env = "SHOAL_FAULT_INJECTION")]
    pub fault_injection: bool,
    /// With --fault-injection only: run this peer's clock this many ms ahead (behind, if
    /// negative), for clock drills.
    #[arg(long, env = "SHOAL_CLOCK_SKEW_MS", allow_hyphen_values = true)]
    pub clock_skew_ms: Option<i64>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a new network key to FILE (never over an existing one), for every peer of a
    /// private network to take as --network-key.
    Keygen { file: PathBuf },
}

/// Every setting, with its default. Unknown keys in the TOML file are errors, so a typo
/// never silently falls back to a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub external_addrs: Vec<String>,
    pub network_key: Option<PathBuf>,
    pub api_addr: SocketAddr,
    pub api_tokens: Option<PathBuf>,
    /// In an open network, most peers of one /24 (IPv4) or /48 (IPv6) that hold data
    /// (an eclipse bound); unset, R-1 without a network key and no bound with one; 0, no
    /// bound.
    pub max_peers_per_subnet: Option<usize>,
    /// Whether that bound counts loopback and private addresses too, not public ones only.
    pub count_private_subnets: bool,
    pub replication_factor: usize,
    pub chunks_in_flight: usize,
    pub request_timeout_secs: u64,
    pub read_hedge_after_ms: u64,
    pub max_inbound_connections: u32,
    pub failure_grace_ms: u64,
    pub move_window_secs: u64,
    pub anti_entropy_interval_ms: u64,
    pub repair_concurrency: usize,
    pub repair_bytes_per_sec: u64,
    pub scrub_bytes_per_sec: u64,
    pub scrub_pause_secs: u64,
    pub tombstone_lifetime_secs: u64,
    pub gc_grace_ms: u64,
    pub gc_interval_ms: u64,
    pub upload_lifetime_secs: u64,
    /// Free space on the store's disk that writes leave alone.
    pub min_free_bytes: u64,
    pub fault_injection: bool,
    /// With `fault_injection` only: this peer's clock runs this many ms ahead (behind,
    /// if negative), for clock drills.
    pub clock_skew_ms: i64,
}

impl Default for Config {
    /// The node's defaults, in this file's units.
    fn default() -> Self {
        let node = shoal_node::NodeConfig::default();
        let ms = |duration: Duration| u64::try_from(duration.as_millis()).expect("defaults fit");
        Self {
            data_dir: PathBuf::from("shoal-data"),
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            bootstrap: Vec::new(),
            external_addrs: Vec::new(),
            network_key: None,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            api_tokens: None,
            max_peers_per_subnet: None,
            count_private_subnets: false,
            replication_factor: node.replication_factor,
            chunks_in_flight: node.chunks_in_flight,
            request_timeout_secs: 30,
            read_hedge_after_ms: ms(node.read_hedge_after),
            max_inbound_connections: shoal_net::MAX_INBOUND_CONNECTIONS,
            failure_grace_ms: ms(node.failure_grace),
            move_window_secs: node.move_window.as_secs(),
            anti_entropy_interval_ms: ms(node.anti_entropy_interval),
            repair_concurrency: node.repair_concurrency,
            repair_bytes_per_sec: node.repair_bytes_per_sec,
            scrub_bytes_per_sec: node.scrub_bytes_per_sec,
            scrub_pause_secs: node.scrub_pause.as_secs(),
            tombstone_lifetime_secs: node.tombstone_lifetime.as_secs(),
            gc_grace_ms: ms(node.gc_grace),
            gc_interval_ms: ms(node.gc_interval),
            upload_lifetime_secs: node.upload_lifetime.as_secs(),
            min_free_bytes: shoal_store::DEFAULT_MIN_FREE_BYTES,
            fault_injection: false,
            clock_skew_ms: node.clock_skew_ms,
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
        if !args.external_addrs.is_empty() {
            config.external_addrs = args.external_addrs;
        }
        if let Some(key) = args.network_key {
            config.network_key = Some(key);
        }
        if let Some(addr) = args.api_addr {
            config.api_addr = addr;
        }
        if let Some(tokens) = args.api_tokens {
            config.api_tokens = Some(tokens);
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
        if let Some(secs) = args.upload_lifetime_secs {
            config.upload_lifetime_secs = secs;
        }
        if let Some(skew) = args.clock_skew_ms {
            config.clock_skew_ms = skew;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// The settings a TOML config file gives, unchecked: flags may still change them
    /// before [`Config::validate`].
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))
    }

    /// Refuses settings that cannot work, or that would open the store to anyone.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=256).contains(&self.chunks_in_flight), "chunks_in_flight must be 1 to 256");
        anyhow::ensure!(self.request_timeout_secs > 0, "request_timeout_secs must be positive");
        // Rounds keep connections to counted peers busy; idle ones close after 10 minutes.
        anyhow::ensure!(
            (1..=300_000).contains(&self.anti_entropy_interval_ms),
            "anti_entropy_interval_ms must be 1 to 300000"
        );
        anyhow::ensure!((1..=256).contains(&self.repair_concurrency), "repair_concurrency must be 1 to 256");
        anyhow::ensure!(!self.listen.is_empty(), "at least one listen address is needed");
        anyhow::ensure!(self.clock_skew_ms == 0 || self.fault_injection, "clock_skew_ms needs fault_injection");
        // Without tokens the API serves anyone who reaches it.
        anyhow::ensure!(
            self.api_tokens.is_some() || self.api_addr.ip().is_loopback(),
            "the API address {} is beyond loopback: give it --api-tokens FILE, or listen on 127.0.0.1",
            self.api_addr
        );
        self.node_config().validate()?;
        Ok(())
    }

    /// The bound on peers of one subnet that hold data (see `max_peers_per_subnet`).
    pub fn subnet_limit(&self) -> Option<shoal_net::SubnetLimit> {
        let per_subnet = match self.max_peers_per_subnet {
            Some(0) => return None,
            Some(per_subnet) => per_subnet,
            None if self.network_key.is_some() => return None,
            None => self.replication_factor.saturating_sub(1).max(1),
        };
        Some(shoal_net::SubnetLimit { per_subnet, count_private: self.count_private_subnets })
    }

    /// Whether every libp2p listen address is a loopback one (`/ip4/127.…`, `/ip6/::1`),
    /// so no other machine can reach this peer.
    pub fn listens_on_loopback_only(&self) -> bool {
        self.listen.iter().all(|addr| {
            let ip = addr.split('/').nth(2).and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
            ip.is_some_and(|ip| ip.is_loopback())
        })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn node_config(&self) -> shoal_node::NodeConfig {
        shoal_node::NodeConfig {
            replication_factor: self.replication_factor,
            chunks_in_flight: self.chunks_in_flight,
            read_hedge_after: Duration::from_millis(self.read_hedge_after_ms),
            failure_grace: Duration::from_millis(self.failure_grace_ms),
            move_window: Duration::from_secs(self.move_window_secs),
            anti_entropy_interval: Duration::from_millis(self.anti_entropy_interval_ms),
            repair_concurrency: self.repair_concurrency,
            repair_bytes_per_sec: self.repair_bytes_per_sec,
            scrub_bytes_per_sec: self.scrub_bytes_per_sec,
            scrub_pause: Duration::from_secs(self.scrub_pause_secs),
            tombstone_lifetime: Duration::from_secs(self.tombstone_lifetime_secs),
            gc_grace: Duration::from_millis(self.gc_grace_ms),
            gc_interval: Duration::from_millis(self.gc_interval_ms),
            upload_lifetime: Duration::from_secs(self.upload_lifetime_secs),
            clock_skew_ms: self.clock_skew_ms,
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
        let text = "replication_factor = 5\napi_addr = \"127.0.0.1:9000\"\nnetwork_key = \"/etc/shoal/swarm.key\"\n";
        std::fs::write(&path, text).unwrap();
        let config =
            Config::from_args(args(&["--config", path.to_str().unwrap(), "--replication-factor", "2"])).unwrap();
        assert_eq!(config.replication_factor, 2);
        assert_eq!(config.api_addr.port(), 9000);
        assert_eq!(config.network_key.as_deref(), Some(Path::new("/etc/shoal/swarm.key")));
    }

    #[test]
    fn the_defaults_are_the_nodes() {
        let config = Config::default();
        assert_eq!(config.node_config().network_settings(), shoal_node::NodeConfig::default().network_settings());
        assert_eq!(Config::from_args(args(&[])).unwrap().gc_grace_ms, config.gc_grace_ms);
    }

    #[test]
    fn settings_that_cannot_work_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoald.toml");
        std::fs::write(&path, "tombstone_lifetime_secs = 60\n").unwrap();
        let error = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err().to_string();
        assert_eq!(error, "tombstone_lifetime must be longer than gc_grace");
        let error = Config::from_args(args(&["--gc-grace-ms", "0"])).unwrap_err().to_string();
        assert!(error.starts_with("gc_grace must be positive") && !error.contains('\n'), "{error}");
        std::fs::write(&path, "clock_skew_ms = 5000\n").unwrap();
        let error = Config::from_args(args(&["--config", path.to_str().unwrap()])).unwrap_err().to_string();
        assert_eq!(error, "clock_skew_ms needs fault_injection");
        let error = Config::from_args(args(&["--api-addr", "0.0.0.0:7000"])).unwrap_err().to_string();
        assert_eq!(
            error,
            "the API address 0.0.0.0:7000 is beyond loopback: give it --api-tokens FILE, or listen on 127.0.0.1"
        );
        let tokens = Config::from_args(args(&["--api-addr", "10.0.0.1:7000", "--api-tokens", "/etc/shoal/tokens"]));
        assert!(tokens.is_ok(), "{tokens:?}");
    }

    #[test]
    fn only_loopback_listen_addresses_keep_an_open_network_to_this_machine() {
        let listening = |addrs: &[&str]| Config::from_args(args(&["--listen", &addrs.join(",")])).unwrap();
        assert!(listening(&["/ip4/127.0.0.1/tcp/0", "/ip6/::1/tcp/4001"]).listens_on_loopback_only());
        assert!(!listening(&["/ip4/127.0.0.1/tcp/0", "/ip4/0.0.0.0/tcp/4001"]).listens_on_loopback_only());
        assert!(!listening(&["/dns4/localhost/tcp/4001"]).listens_on_loopback_only());
        assert!(!Config::default().listens_on_loopback_only());
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
