//! `shoal-chaos`: a seeded workload against a running testnet while a scenario's faults
//! run (Jepsen's clients, nemesis and checker, in one process). After the faults heal it
//! waits for the network to settle, checks the history and prints a report: the seed,
//! operations by outcome, the faults applied, every anomaly with the operations involved,
//! and the time to converge. Exits non-zero on any anomaly. `testnet/chaos` runs it on a
//! fresh testnet of hosts per seed.
#![allow(clippy::print_stdout, reason = "the report is the output")]

mod check;
mod history;
mod nemesis;
mod testnet;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use shoal_core::PeerKey;

use check::Anomaly;
use history::{History, Outcome};
use nemesis::Nemesis;
use testnet::Testnet;
use workload::{Clients, Rng};

#[derive(Debug, Parser)]
#[command(name = "shoal-chaos", about)]
struct Args {
    /// The running testnet.
    #[arg(long, env = "SHOAL_TESTNET_DIR", default_value = "/var/tmp/shoal-testnet")]
    testnet_dir: PathBuf,
    /// Where the testnet commands are (the repository's testnet/).
    #[arg(long)]
    scripts: PathBuf,
    /// What faults to run; `--scenario list` names them all.
    #[arg(long)]
    scenario: String,
    /// Decides every choice of the clients and the faults: the same seed replays the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the clients run, faults included.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// How long the network may take to settle after the heal.
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.scenario == "list" {
        for (name, what) in nemesis::SCENARIOS {
            println!("{name:22} {what}");
        }
        return Ok(());
    }
    let testnet = Testnet::open(&args.testnet_dir, &args.scripts)?;
    let peers = testnet.size()?;
    let r = testnet.client(1)?.status().await?.replication_factor;
    let run = Duration::from_secs(args.secs);
    let mut rng = Rng::new(args.seed);
    let steps = nemesis::schedule(&args.scenario, peers, run, &mut rng.fork())?;

    let start = Instant::now();
    let clients = Clients { start, ops: Arc::new(Mutex::new(Vec::new())) };
    let apis = (1..=peers).map(|p| Ok((p, testnet.client(p)?))).collect::<anyhow::Result<Vec<_>>>()?;
    let mut nemesis = Nemesis::new(&testnet, start);
    let (faults, ()) = tokio::join!(nemesis.run(steps), clients.run(args.clients, apis, &mut rng, start + run));
    faults?;
    let healed_at = start.elapsed();
    nemesis.heal_all().await?;
    let healed = Instant::now();

    let ops = std::mem::take(&mut *clients.ops.lock().expect("never poisoned"));
    let mut history = History { ops, faults: nemesis.applied.clone(), separations: nemesis.separations.clone() };
    history.ops.sort_by_key(|op| op.invoked);
    let live: Vec<usize> = (1..=testnet.size()?).filter(|p| !nemesis.removed.contains_key(p)).collect();
    let removed: Vec<PeerKey> = nemesis.removed.values().cloned().collect();

    // Names first: what they end bound to decides which objects must live.
    let (finals, mut anomalies) = check::final_names(&history, &testnet, &live).await?;
    let deadline = healed + Duration::from_secs(args.settle_secs);
    let (converged, settling) = loop {
        let settling = check::placement_and_reclamation(&history, &testnet, &live, &removed, &finals, r).await?;
        if settling.anomalies.is_empty() {
            break (Some(healed.elapsed()), settling);
        }
        if Instant::now() > deadline {
            break (None, settling);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (leaked, held_up) = (settling.leaked, settling.held_up);
    anomalies.extend(settling.anomalies);
    anomalies.extend(check::name_reads(&history));
    anomalies.extend(check::object_reads(&history, &testnet, &live, &finals).await?);

    let verdict = Verdict { healed_at, converged, leaked, held_up, anomalies };
    report(&args, peers, &testnet, &history, &verdict);
    if !verdict.anomalies.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

/// What the checks found.
struct Verdict {
    /// When the faults ended.
    healed_at: Duration,
    /// How long after the heal every item was placed and reclaimed, if it was in time.
    converged: Option<Duration>,
    /// Failed named puts whose copies were left when the rest settled.
    leaked: usize,
    /// Deleted objects whose collection waits for a removed peer to be forgotten.
    held_up: usize,
    anomalies: Vec<Anomaly>,
}

fn report(args: &Args, peers: usize, testnet: &Testnet, history: &History, verdict: &Verdict) {
    let Verdict { healed_at, converged, leaked, held_up, anomalies } = verdict;
    let mode = if testnet.hosts() { "hosts" } else { "loopback" };
    println!(
        "scenario {} seed {}: {peers} peers ({mode}), {} clients, {} s of load",
        args.scenario, args.seed, args.clients, args.secs
    );
    println!("faults:");
    for fault in &history.faults {
        println!("  {:7.1} s  {}", fault.at.as_secs_f64(), fault.what);
    }
    println!("  {:7.1} s  the run ends: everything still in force is undone", healed_at.as_secs_f64());
    let mut by_kind: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for op in &history.ops {
        let counts = by_kind.entry(op.kind()).or_default();
        counts[match op.outcome {
            Outcome::Ok => 0,
            Outcome::Failed(_) => 1,
            Outcome::Unknown(_) => 2,
        }] += 1;
    }
    println!("operations      ok  failed unknown");
    for (kind, [ok, failed, unknown]) in &by_kind {
        println!("  {kind:10} {ok:7} {failed:7} {unknown:7}");
    }
    match converged {
        Some(took) => println!("converged {:.1} s after the heal", took.as_secs_f64()),
        None => println!("did not converge within {} s of the heal", args.settle_secs),
    }
    if *leaked > 0 {
        println!("failed named puts with copies left when the rest settled: {leaked}");
    }
    if *held_up > 0 {
        println!("deleted objects whose collection waits for a removed peer to be forgotten: {held_up}");
    }
    println!("anomalies: {}", anomalies.len());
    for anomaly in anomalies {
        println!("  [{}] {}", anomaly.check, anomaly.what);
        for op in &anomaly.ops {
            println!("      {op}");
        }
    }
    let acked = history.ops.iter().filter(|op| op.acked()).count();
    println!(
        "RESULT scenario={} seed={} ops={} acked={acked} anomalies={} converge_s={} leaked={leaked} held_up={held_up}",
        args.scenario,
        args.seed,
        history.ops.len(),
        anomalies.len(),
        converged.map_or("none".to_owned(), |took| format!("{:.1}", took.as_secs_f64()))
    );
}
