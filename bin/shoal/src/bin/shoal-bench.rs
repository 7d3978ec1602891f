//! `shoal-bench`: puts `count` distinct small objects through a daemon's API with a fixed
//! number of requests in flight, then gets them all back, and prints operations per second
//! and latency percentiles for each, one line each.
#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use shoal_api::Client;
use shoal_core::{Consistency, ObjectId};

#[derive(Debug, Parser)]
#[command(name = "shoal-bench", about)]
struct Args {
    /// API of the daemon to load.
    #[arg(long)]
    api: String,
    /// Bytes per object.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Objects to put, then get.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    #[arg(long, default_value = "quorum")]
    consistency: Consistency,
}

/// Operations per second over the whole run, then p50 and p99 latency in milliseconds.
fn report(what: &str, elapsed: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!("{what} ops_per_s={rate:.0} p50_ms={:.2} p99_ms={:.2}", at(0.5), at(0.99));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&args.api)?;
    // Distinct bytes every run, or a second run would only be deduplicated.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let objects: Vec<Bytes> = (0..args.count)
        .map(|i| {
            let mut bytes = format!("{run} {i} ").into_bytes();
            bytes.resize(args.size, b'.');
            Bytes::from(bytes)
        })
        .collect();

    let started = Instant::now();
    let puts: Vec<(ObjectId, Duration)> = stream::iter(objects.iter().cloned())
        .map(|object| {
            let client = client.clone();
            async move {
                let began = Instant::now();
                let body = stream::iter([Ok::<_, std::io::Error>(object)]);
                let receipt = client.put(body, Some(args.consistency)).await?;
                anyhow::Ok((receipt.id, began.elapsed()))
            }
        })
        .buffer_unordered(args.in_flight)
        .try_collect()
        .await?;
    report("put", started.elapsed(), puts.iter().map(|(_, latency)| *latency).collect());

    let started = Instant::now();
    let gets: Vec<Duration> = stream::iter(puts.iter().map(|(id, _)| *id))
        .map(|id| {
            let client = client.clone();
            async move {
                let began = Instant::now();
                let download = client.get(&id, None).await?;
                let bytes: Vec<Bytes> = download.bytes.try_collect().await?;
                anyhow::ensure!(bytes.iter().map(Bytes::len).sum::<usize>() == args.size, "short read of {id}");
                anyhow::Ok(began.elapsed())
            }
        })
        .buffer_unordered(args.in_flight)
        .try_collect()
        .await?;
    report("get", started.elapsed(), gets);
    Ok(())
}
