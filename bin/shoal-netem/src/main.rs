//! `shoal-netem`: netem's delay and jitter in user space, for kernels built without the
//! netem queueing discipline. iptables hands it packets (the NFQUEUE target; `testnet/link`
//! sets that up inside a host's namespace) and it lets each one go `delay` ms later, give or
//! take up to `jitter` ms, uniformly: as with netem's jitter, packets may overtake each
//! other. Only packet metadata crosses to user space, so the cost per packet is small.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "shoal-netem", about)]
struct Args {
    /// The NFQUEUE queue number iptables sends the packets to.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Decides the jitter of every packet.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// How long the loop sleeps at most between looks at the queue: the delay's resolution.
const TICK: Duration = Duration::from_millis(1);
/// Packets held at once before the kernel drops new ones (as a full link would).
const QUEUE_MAX_LEN: u32 = 1 << 16;

/// A packet held until `due`; `order` keeps packets due at once in arrival order.
struct Held {
    due: Instant,
    order: u64,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut queue = nfq::Queue::open().context("cannot open a netfilter queue socket (needs root)")?;
    queue.bind(args.queue).with_context(|| format!("cannot bind netfilter queue {}", args.queue))?;
    queue.set_copy_range(args.queue, 0)?;
    queue.set_queue_max_len(args.queue, QUEUE_MAX_LEN)?;
    queue.set_nonblocking(true);

    let mut random = args.seed;
    let mut held = BinaryHeap::new();
    let mut order = 0u64;
    loop {
        loop {
            match queue.recv() {
                Ok(mut message) => {
                    message.set_verdict(nfq::Verdict::Accept);
                    let due = Instant::now() + delay(&args, &mut random);
                    held.push(Reverse(Held { due, order, message }));
                    order += 1;
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => return Err(error).context("cannot read the queue"),
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse(packet)| packet.due <= now) {
            let Some(Reverse(packet)) = held.pop() else { break };
            queue.verdict(packet.message).context("cannot release a packet")?;
        }
        let next = held.peek().map_or(TICK, |Reverse(packet)| packet.due.saturating_duration_since(now));
        std::thread::sleep(next.min(TICK));
    }
}

/// `delay` plus a uniform draw from -`jitter`..=`jitter`, never below zero.
fn delay(args: &Args, random: &mut u64) -> Duration {
    // SplitMix64.
    *random = random.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *random;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let spread = z % (2 * args.jitter_ms + 1);
    Duration::from_millis((args.delay_ms + spread).saturating_sub(args.jitter_ms))
}
