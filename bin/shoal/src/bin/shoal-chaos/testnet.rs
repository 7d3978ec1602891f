//! The testnet under test, seen through its folder and driven through its commands, so
//! that every fault the run applies is one a person can apply by hand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_api::Client;
use shoal_core::PeerKey;

pub struct Testnet {
    dir: PathBuf,
    scripts: PathBuf,
}

impl Testnet {
    pub fn open(dir: &Path, scripts: &Path) -> anyhow::Result<Self> {
        let testnet = Self { dir: dir.to_owned(), scripts: scripts.to_owned() };
        testnet.size().with_context(|| format!("no testnet in {}", dir.display()))?;
        Ok(testnet)
    }

    pub fn size(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_to_string(self.dir.join("size"))?.trim().parse()?)
    }

    pub fn hosts(&self) -> bool {
        self.dir.join("hosts").exists()
    }

    fn data_dir(&self, peer: usize) -> PathBuf {
        let dir = self.dir.join(format!("peer{peer}"));
        if self.hosts() { dir.join("disk") } else { dir }
    }

    pub fn client(&self, peer: usize) -> anyhow::Result<Client> {
        let url = std::fs::read_to_string(self.data_dir(peer).join("api.url"))
            .with_context(|| format!("peer {peer} has not published its API"))?;
        let client = Client::new(url.trim())?;
        // A testnet of hosts serves its APIs beyond loopback, with a token (lib.sh).
        match std::fs::read_to_string(self.dir.join("api-token")) {
            Ok(token) => Ok(client.with_token(token.trim())?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(client),
            Err(e) => Err(e).context("cannot read the testnet's API token"),
        }
    }

    pub async fn peer_key(&self, peer: usize) -> anyhow::Result<PeerKey> {
        let status = self.client(peer)?.status().await?;
        status.network.peer_id.parse().map_err(|e| anyhow::anyhow!("peer {peer}'s id: {e}"))
    }

    /// Runs `testnet/NAME ARGS`, which must succeed within `limit`.
    pub async fn run(&self, name: &str, args: &[String], limit: Duration) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(self.scripts.join(name));
        command.args(args).env("SHOAL_TESTNET_DIR", &self.dir).stdin(std::process::Stdio::null());
        command.kill_on_drop(true);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .with_context(|| format!("testnet/{name} {} took over {limit:?}", args.join(" ")))??;
        if !output.status.success() {
            bail!("testnet/{name} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }
}
