//! `shoal`: the command-line client of a Shoal daemon.
#![allow(clippy::print_stdout, reason = "a CLI prints its results")]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::{Stream, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use shoal_api::Client;
use shoal_core::{Consistency, ObjectId};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

/// Store and fetch objects on a Shoal network.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// The API of the daemon to talk to.
    #[arg(long, env = "SHOAL_API", default_value = "http://127.0.0.1:7000", global = true)]
    api: String,
    /// The API token to send (`Authorization: Bearer`), for a daemon started with
    /// --api-tokens.
    #[arg(long, env = "SHOAL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a file (or standard input: `-`) and print its id.
    Put {
        file: PathBuf,
        /// Also bind this name (a UTF-8 path like photos/cat.jpg) to the object.
        #[arg(long)]
        name: Option<String>,
        /// Acks to wait for per item: one, quorum or all.
        #[arg(long)]
        consistency: Option<Consistency>,
    },
    /// Fetch an object, by id or by name, to standard output or a file.
    Get {
        target: String,
        /// Where to write it; `-` or nothing for standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replicas that must answer a name lookup: one, quorum or all.
        #[arg(long)]
        consistency: Option<Consistency>,
    },
    /// Show an object's size and chunk count, by id, or a name's binding.
    Head {
        target: String,
        #[arg(long)]
        consistency: Option<Consistency>,
    },
    /// Delete a name, or an unnamed object by id (its space is reclaimed after the grace
    /// period unless a name refers to it).
    Rm {
        target: String,
        #[arg(long)]
        consistency: Option<Consistency>,
    },
    /// List the live names under a prefix (all names without one).
    Ls { prefix: Option<String> },
    /// Show the daemon's peer, network and store.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = Client::new(&cli.api)?;
    // An empty token (`SHOAL_TOKEN=` for a daemon without tokens) is none.
    if let Some(token) = cli.token.as_deref().filter(|token| !token.is_empty()) {
        client = client.with_token(token)?;
    }
    match cli.command {
        Command::Put { file, name, consistency } => put(&client, &file, name.as_deref(), consistency, cli.json).await,
        Command::Get { target, output, consistency } => get(&client, &target, output.as_deref(), consistency).await,
        Command::Head { target, consistency } => head(&client, &target, consistency, cli.json).await,
        Command::Rm { target, consistency } if looks_like_id(&target) => {
            Ok(client.delete_object(&parse_id(&target)?, consistency).await?)
        }
        Command::Rm { target, consistency } => Ok(client.delete_name(&target, consistency).await?),
        Command::Ls { prefix } => ls(&client, prefix.as_deref().unwrap_or(""), cli.json).await,
        Command::Status => status(&client, cli.json).await,
    }
}

/// Ids are 64 hex characters, and names never are; anything else that looks almost like
/// an id (hex, 40 to 80 characters) is treated as a mistyped id, not as a name.
fn looks_like_id(target: &str) -> bool {
    (40..=80).contains(&target.len()) && target.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_id(text: &str) -> anyhow::Result<ObjectId> {
    Ok(text.parse()?)
}

/// A progress bar on a terminal; nothing in pipes or for scripts.
fn progress(len: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = len.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    let template = "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar} {eta}";
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

async fn put(
    client: &Client,
    file: &Path,
    name: Option<&str>,
    consistency: Option<Consistency>,
    json: bool,
) -> anyhow::Result<()> {
    let (reader, len): (Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>, Option<u64>) = if file == Path::new("-") {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let opened = tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
        let len = opened.metadata().await?.len();
        (Box::new(opened), Some(len))
    };
    let bar = progress(len, json);
    let read = Arc::new(AtomicU64::new(0));
    let (counted, sent) = (bar.clone(), read.clone());
    let body = ReaderStream::with_capacity(reader, 256 << 10).inspect_ok(move |bytes| {
        counted.inc(bytes.len() as u64);
        sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    });
    // A file that shrinks while it is read must fail the put, not store a shorter object.
    let end_check = futures::stream::once(async move {
        let read = read.load(Ordering::Relaxed);
        match len {
            Some(len) if read != len => {
                Err(std::io::Error::other(format!("the file changed while it was read: {read} of {len} bytes")))
            }
            _ => Ok(Bytes::new()),
        }
    });
    let body = body.chain(end_check);
    let (id, json_receipt) = match name {
        Some(name) => {
            let receipt = client.put_named(name, body, consistency).await;
            bar.finish_and_clear();
            let receipt = receipt?;
            (receipt.object.id, serde_json::to_string(&receipt)?)
        }
        None => {
            let receipt = client.put(body, consistency).await;
            bar.finish_and_clear();
            let receipt = receipt?;
            (receipt.id, serde_json::to_string(&receipt)?)
        }
    };
    println!("{}", if json { json_receipt } else { id.to_string() });
    Ok(())
}

async fn get(
    client: &Client,
    target: &str,
    output: Option<&Path>,
    consistency: Option<Consistency>,
) -> anyhow::Result<()> {
    let (id, download) = if looks_like_id(target) {
        let id = parse_id(target)?;
        (id, client.get(&id, None).await?)
    } else {
        let (download, named) = client.get_named(target, consistency).await?;
        (named.id, download)
    };
    let id = &id;
    let bar = progress(Some(download.len), false);
    let bytes = download.bytes.inspect_ok(|chunk| bar.inc(chunk.len() as u64));
    let result = match output.filter(|path| *path != Path::new("-")) {
        Some(path) => write_file(path, id, bytes).await,
        None => write_verified(&mut tokio::io::stdout(), id, bytes).await,
    };
    bar.finish_and_clear();
    result
}

/// Writes next to `path` and renames only once the bytes are verified, so a failed
/// download never leaves a file that looks complete.
async fn write_file<S>(path: &Path, id: &ObjectId, bytes: S) -> anyhow::Result<()>
where
    S: Stream<Item = Result<Bytes, shoal_api::ClientError>> + Unpin,
{
    let mut partial_name = path.file_name().context("output must name a file")?.to_os_string();
    partial_name.push(".partial");
    let partial = path.with_file_name(partial_name);
    let mut file =
        tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
    let written = match write_verified(&mut file, id, bytes).await {
        Ok(()) => file.sync_all().await.context("cannot sync the download to disk"),
        Err(error) => Err(error),
    };
    match written {
        Ok(()) => tokio::fs::rename(&partial, path).await.with_context(|| format!("cannot write {}", path.display())),
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(error)
        }
    }
}

/// Copies the download out while hashing it: the bytes must hash to the id they were
/// asked for, checked end to end whatever the daemon did.
async fn write_verified<W, S>(out: &mut W, id: &ObjectId, mut bytes: S) -> anyhow::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
    S: Stream<Item = Result<Bytes, shoal_api::ClientError>> + Unpin,
{
    let mut hasher = blake3::Hasher::new();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    let actual = ObjectId::from(hasher.finalize());
    if actual != *id {
        bail!("downloaded bytes hash to {actual}, not {id}; the download is incomplete or corrupt");
    }
    Ok(())
}

async fn head(client: &Client, target: &str, consistency: Option<Consistency>, json: bool) -> anyhow::Result<()> {
    let (id, info, named) = if looks_like_id(target) {
        let id = parse_id(target)?;
        (id, client.head(&id).await?, None)
    } else {
        let (info, named) = client.head_named(target, consistency).await?;
        (named.id, info, Some(named))
    };
    let mut fields = serde_json::json!({ "id": id, "size": info.size, "chunks": info.chunks });
    if let Some(named) = &named {
        fields["name"] = target.into();
        fields["version"] = named.version.clone().into();
        fields["modified_ms"] = named.modified_ms.into();
    }
    if json {
        println!("{fields}");
        return Ok(());
    }
    if let Some(named) = &named {
        println!("name     {target}\nversion  {}\nmodified {} ms since the epoch", named.version, named.modified_ms);
    }
    println!("id       {id}\nsize     {}\nchunks   {}", info.size, info.chunks);
    Ok(())
}

/// Walks the listing page by page. Names are printed as they come; a peer that did not
/// answer makes the command fail at the end, naming it, since names only it holds are
/// missing.
async fn ls(client: &Client, prefix: &str, json: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut unanswered: BTreeMap<String, String> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = client.list_names(prefix, after.as_deref(), None).await?;
        for missing in page.unanswered {
            unanswered.entry(missing.peer).or_insert(missing.reason);
        }
        if json {
            all.extend(page.names);
        } else {
            for name in page.names {
                println!("{}\t{}\t{}", name.name, name.size, name.id);
            }
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string(&all)?);
    }
    if !unanswered.is_empty() {
        let peers: Vec<String> = unanswered.iter().map(|(peer, reason)| format!("{peer}: {reason}")).collect();
        bail!(
            "listing incomplete: {} peers did not answer, names only they hold are missing ({})",
            peers.len(),
            peers.join("; ")
        );
    }
    Ok(())
}

async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client.status().await?;
    if json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    println!("peer id            {}", status.network.peer_id);
    for addr in &status.network.listen_addrs {
        println!("listening on       {addr}");
    }
    for addr in &status.network.announced_addrs {
        println!("announced as       {addr}");
    }
    println!("replication factor {}", status.replication_factor);
    println!("routing table      {} peers", status.network.routing_table_peers);
    println!("connected          {} peers", status.network.peers_connected);
    match &status.network.network_key {
        Some(fingerprint) => println!("network            private, key fingerprint {fingerprint}"),
        None => println!("network            open: any libp2p peer may join"),
    }
    if status.network.handshakes_failed > 0 {
        println!("failed handshakes  {} (peers without this network's key?)", status.network.handshakes_failed);
    }
    println!("stored             {} items, {} bytes", status.items_stored, status.bytes_stored);
    let full = if status.disk_full { " (full: writes refused)" } else { "" };
    println!("disk               {} bytes free{full}", status.disk_free_bytes);
    if let Some(farthest) = status.peer_clocks.iter().max_by_key(|clock| clock.offset_ms.unsigned_abs()) {
        println!(
            "peer clocks        {} measured, farthest {:+} ms ({})",
            status.peer_clocks.len(),
            farthest.offset_ms,
            farthest.peer
        );
    }
    let repair = &status.repair;
    println!("counted as holders {} peers (this one included)", repair.peers_counted);
    println!(
        "repair             {} under-replicated, {} queued, {} not yet handed off",
        repair.under_replicated, repair.backlog, repair.handoff_pending
    );
    println!(
        "repaired           {} items, {} bytes, {} handed off",
        repair.items_moved, repair.bytes_moved, repair.handoffs
    );
    println!(
        "anti-entropy       {} rounds, {} exchanges, {} bytes",
        repair.rounds, repair.anti_entropy_exchanges, repair.anti_entropy_bytes
    );
    println!(
        "scrub              {} checked, {} corrupt, {} repaired",
        repair.scrubbed, repair.corrupt_found, repair.corrupt_repaired
    );
    for worker in &status.workers {
        let state = serde_json::to_value(worker.state)?;
        let errors = match &worker.last_error {
            Some(last) => format!(", {} errors (last: {last})", worker.errors),
            None => String::new(),
        };
        println!("worker {:<11} {}: {}{errors}", worker.name, state.as_str().unwrap_or("?"), worker.progress);
    }
    Ok(())
}
