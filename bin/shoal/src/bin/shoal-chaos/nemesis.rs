//! Scenarios: named schedules of faults, each applied through a testnet command and
//! undone by the heal at the end of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shoal_core::PeerKey;

use crate::history::{AppliedFault, Separation};
use crate::testnet::Testnet;
use crate::workload::Rng;

/// Longer than the testnet's failure grace (2 s) and collection grace (10 s) together, so
/// both sides of a partition give up on the other and collection runs meanwhile.
const LONG: Duration = Duration::from_secs(25);
/// Longer than the failure grace: the peer is declared dead and repaired around.
const PAST_GRACE: Duration = Duration::from_secs(6);
/// How far the clock scenario sets two clocks off.
const SKEW_MS: i64 = 30_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Partition(Vec<Vec<usize>>),
    Isolate(usize),
    Heal,
    Kill(usize),
    Start(usize),
    Pause(usize),
    Resume(usize),
    Skew(usize, i64),
    Fill(usize),
    Unfill(usize),
    Lossy(usize),
    ClearLink(usize),
    /// A new peer joins.
    Add,
    /// A peer is killed for good.
    Remove(usize),
}

pub const SCENARIOS: [(&str, &str); 10] = [
    ("halves", "the network splits in two halves for longer than the grace periods"),
    ("bridge", "two sides that cannot see each other, and one peer that sees both"),
    ("isolated-coordinator", "the peer clients talk to is cut off, again and again, mid-put"),
    ("kill", "R-1 peers killed with SIGKILL at random, then restarted"),
    ("pause", "a peer stopped (SIGSTOP) for longer than the failure grace, then continued"),
    ("clock", "one clock 30 s ahead and one 30 s behind"),
    ("lossy", "10% packet loss and 50 ± 50 ms of delay on every link"),
    ("disk-full", "one peer's disk filled to the last byte, then freed"),
    ("membership", "a peer added and one removed under load"),
    ("mixed", "a short run of several faults: partition, kill, pause (the CI run)"),
];

/// The faults of `scenario` on `n` peers over a run of `run`, at their offsets.
pub fn schedule(scenario: &str, n: usize, run: Duration, rng: &mut Rng) -> anyhow::Result<Vec<(Duration, Fault)>> {
    let secs = |s: u64| Duration::from_secs(s);
    let peers: Vec<usize> = (1..=n).collect();
    let mut steps = Vec::new();
    match scenario {
        "halves" => {
            let (left, right) = peers.split_at(n / 2);
            steps.push((run / 6, Fault::Partition(vec![left.to_vec(), right.to_vec()])));
            steps.push((run / 6 + LONG.max(run / 2), Fault::Heal));
        }
        "bridge" => {
            let bridge = 1 + rng.below(n);
            let others: Vec<usize> = peers.iter().copied().filter(|&p| p != bridge).collect();
            let (left, right) = others.split_at(others.len() / 2);
            steps.push((run / 6, Fault::Partition(vec![left.to_vec(), right.to_vec()])));
            steps.push((run / 6 + LONG.max(run / 2), Fault::Heal));
        }
        "isolated-coordinator" => {
            let mut rng = rng.fork();
            repeat(&mut steps, run, secs(5), secs(14), move || {
                let peer = 1 + rng.below(n);
                vec![(Duration::ZERO, Fault::Isolate(peer)), (PAST_GRACE, Fault::Heal)]
            });
        }
        "kill" => {
            let mut rng = rng.fork();
            repeat(&mut steps, run, secs(5), secs(20), move || {
                let victims = pick(&mut rng, n, 2);
                let mut faults: Vec<_> = victims.iter().map(|&p| (Duration::ZERO, Fault::Kill(p))).collect();
                faults.extend(victims.iter().map(|&p| (secs(8), Fault::Start(p))));
                faults
            });
        }
        "pause" => {
            let mut rng = rng.fork();
            repeat(&mut steps, run, secs(5), secs(15), move || {
                let peer = 1 + rng.below(n);
                vec![(Duration::ZERO, Fault::Pause(peer)), (PAST_GRACE, Fault::Resume(peer))]
            });
        }
        "clock" => {
            let pair = pick(rng, n, 2);
            steps.push((Duration::ZERO, Fault::Skew(pair[0], SKEW_MS)));
            steps.push((Duration::ZERO, Fault::Skew(pair[1], -SKEW_MS)));
        }
        "lossy" => {
            steps.extend(peers.iter().map(|&p| (run / 10, Fault::Lossy(p))));
            steps.extend(peers.iter().map(|&p| (run * 8 / 10, Fault::ClearLink(p))));
        }
        "disk-full" => {
            let peer = 1 + rng.below(n);
            steps.push((run / 5, Fault::Fill(peer)));
            steps.push((run * 3 / 5, Fault::Unfill(peer)));
        }
        "membership" => {
            steps.push((run / 4, Fault::Add));
            steps.push((run / 2, Fault::Remove(1 + rng.below(n))));
        }
        "mixed" => {
            let (left, right) = peers.split_at(n / 2);
            let victim = 1 + rng.below(n);
            let paused = 1 + rng.below(n);
            steps.push((run / 10, Fault::Partition(vec![left.to_vec(), right.to_vec()])));
            steps.push((run * 3 / 10, Fault::Heal));
            steps.push((run * 4 / 10, Fault::Kill(victim)));
            steps.push((run * 5 / 10, Fault::Start(victim)));
            steps.push((run * 6 / 10, Fault::Pause(paused)));
            steps.push((run * 6 / 10 + PAST_GRACE, Fault::Resume(paused)));
        }
        other => {
            let names: Vec<&str> = SCENARIOS.iter().map(|(name, _)| *name).collect();
            anyhow::bail!("no scenario {other:?}; the scenarios are {}", names.join(", "));
        }
    }
    steps.sort_by_key(|(at, _)| *at);
    Ok(steps)
}

/// Adds the faults `make` returns every `every` from `first` while the run lasts, each
/// at its offset from the round's start.
fn repeat(
    steps: &mut Vec<(Duration, Fault)>,
    run: Duration,
    first: Duration,
    every: Duration,
    mut make: impl FnMut() -> Vec<(Duration, Fault)>,
) {
    let mut at = first;
    while at < run {
        steps.extend(make().into_iter().map(|(offset, fault)| (at + offset, fault)));
        at += every;
    }
}

/// `count` distinct peers of 1..=n.
fn pick(rng: &mut Rng, n: usize, count: usize) -> Vec<usize> {
    let mut chosen = BTreeSet::new();
    while chosen.len() < count.min(n) {
        chosen.insert(1 + rng.below(n));
    }
    chosen.into_iter().collect()
}

/// Applies faults and remembers what is still to undo.
pub struct Nemesis<'a> {
    testnet: &'a Testnet,
    start: Instant,
    pub applied: Vec<AppliedFault>,
    pub separations: Vec<Separation>,
    separated_since: Option<Duration>,
    /// What the heal must still undo, in the order the faults came.
    undo: Vec<Fault>,
    /// Peers removed for good, with their keys (they still count for placement checks).
    pub removed: BTreeMap<usize, PeerKey>,
}

/// Long enough for a restart to rejoin the network (testnet/start waits up to 90 s).
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

impl<'a> Nemesis<'a> {
    pub fn new(testnet: &'a Testnet, start: Instant) -> Self {
        Self {
            testnet,
            start,
            applied: Vec::new(),
            separations: Vec::new(),
            separated_since: None,
            undo: Vec::new(),
            removed: BTreeMap::new(),
        }
    }

    /// Runs the schedule, each fault at its offset (or as soon as the one before is done).
    pub async fn run(&mut self, steps: Vec<(Duration, Fault)>) -> anyhow::Result<()> {
        for (at, fault) in steps {
            tokio::time::sleep_until((self.start + at).into()).await;
            self.apply(fault).await?;
        }
        Ok(())
    }

    pub async fn apply(&mut self, fault: Fault) -> anyhow::Result<()> {
        let at = self.start.elapsed();
        let (command, args): (&str, Vec<String>) = match &fault {
            Fault::Partition(groups) => (
                "partition",
                groups.iter().map(|g| g.iter().map(usize::to_string).collect::<Vec<_>>().join(",")).collect(),
            ),
            Fault::Isolate(peer) => ("isolate", vec![peer.to_string()]),
            Fault::Heal => ("heal", vec![]),
            Fault::Kill(peer) | Fault::Remove(peer) => ("kill", vec![peer.to_string()]),
            Fault::Start(peer) => ("start", vec![peer.to_string()]),
            Fault::Pause(peer) => ("pause", vec![peer.to_string()]),
            Fault::Resume(peer) => ("resume", vec![peer.to_string()]),
            Fault::Skew(peer, ms) => ("skew", vec![peer.to_string(), ms.to_string()]),
            Fault::Fill(peer) => ("fill", vec![peer.to_string()]),
            Fault::Unfill(peer) => ("unfill", vec![peer.to_string()]),
            Fault::Lossy(peer) => {
                let link = ["--loss", "10", "--delay", "50", "--jitter", "50"].map(String::from);
                ("link", [peer.to_string()].into_iter().chain(link).collect())
            }
            Fault::ClearLink(peer) => ("link", vec![peer.to_string(), "--clear".into()]),
            Fault::Add => ("add", vec!["1".into()]),
        };
        if let Fault::Remove(peer) = fault {
            self.removed.insert(peer, self.testnet.peer_key(peer).await?);
        }
        self.testnet.run(command, &args, COMMAND_LIMIT).await?;
        let what = format!("testnet/{command} {}", args.join(" "));
        self.applied.push(AppliedFault { at, what });
        match fault {
            Fault::Partition(_) | Fault::Isolate(_) => {
                self.separated_since.get_or_insert(at);
            }
            Fault::Heal => {
                if let Some(from) = self.separated_since.take() {
                    self.separations.push(Separation { from, to: self.start.elapsed() });
                }
            }
            _ => {}
        }
        self.undo.retain(|pending| *pending != fault);
        if let Some(undo) = undoing(&fault)
            && !self.undo.contains(&undo)
        {
            self.undo.push(undo);
        }
        Ok(())
    }

    /// Undoes every fault still in force, but removals: the network heals.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        // Heal clears every network fault, link faults included.
        if self.testnet.hosts() {
            self.apply(Fault::Heal).await?;
        }
        for undo in std::mem::take(&mut self.undo) {
            self.apply(undo).await?;
        }
        Ok(())
    }
}

/// The fault that undoes `fault`, for those only a command of their own undoes.
fn undoing(fault: &Fault) -> Option<Fault> {
    match *fault {
        Fault::Kill(peer) => Some(Fault::Start(peer)),
        Fault::Pause(peer) => Some(Fault::Resume(peer)),
        Fault::Skew(peer, ms) if ms != 0 => Some(Fault::Skew(peer, 0)),
        Fault::Fill(peer) => Some(Fault::Unfill(peer)),
        _ => None,
    }
}
