//! A read-after-write history check in the spirit of Jepsen: clients write and read names
//! at QUORUM on a 5-peer testnet while peers are killed and restarted; every read must
//! return the latest acknowledged write or one concurrent with it, and no acknowledged
//! write may be lost. `SHOAL_HISTORY_SEED` (default 42) and `SHOAL_HISTORY_SECS`
//! (default 20) change the run.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const KEYS: [&str; 3] = ["jepsen/a", "jepsen/b", "jepsen/c"];
const CLIENTS: usize = 4;

/// A small deterministic generator, so a seed replays the same choices.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Acknowledged.
    Ok,
    /// Failed or unknown: it may or may not have taken effect, at any time after it began.
    Maybe,
}

#[derive(Debug, Clone)]
struct Write {
    key: &'static str,
    value: String,
    began: Instant,
    ended: Instant,
    outcome: Outcome,
}

#[derive(Debug, Clone)]
struct Read {
    key: &'static str,
    /// The value read, `None` for "no such name".
    value: Option<String>,
    began: Instant,
    ended: Instant,
}

#[derive(Debug, Default)]
struct History {
    writes: Vec<Write>,
    reads: Vec<Read>,
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// The body of a complete answer: `None` when the connection broke before the body
/// reached its Content-Length (the serving peer was killed mid-answer).
fn complete_body(answer: &str) -> Option<&str> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let length = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))?;
    (length.parse::<usize>().ok()? == body.len()).then_some(body)
}

/// One HTTP exchange, or `None` if the peer could not be reached at all.
fn try_http(api: &str, request: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(api.trim_start_matches("http://")).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    std::io::Write::write_all(&mut stream, request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut answer).ok()?;
    String::from_utf8(answer).ok()
}

fn write(api: &str, key: &'static str, value: String) -> Write {
    let request = format!(
        "PUT /v1/names/{key}?consistency=quorum HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{value}",
        value.len()
    );
    let began = Instant::now();
    let answer = try_http(api, &request);
    let outcome = match answer.as_deref().map(status_of) {
        Some(201) => Outcome::Ok,
        _ => Outcome::Maybe,
    };
    Write { key, value, began, ended: Instant::now(), outcome }
}

/// A read at QUORUM; `None` when it failed (failed reads say nothing).
fn read(api: &str, key: &'static str) -> Option<Read> {
    let request = format!("GET /v1/names/{key}?consistency=quorum HTTP/1.1\r\nConnection: close\r\n\r\n");
    let began = Instant::now();
    let answer = try_http(api, &request)?;
    let value = match status_of(&answer) {
        200 => Some(complete_body(&answer)?.to_owned()),
        404 => None,
        _ => return None,
    };
    Some(Read { key, value, began, ended: Instant::now() })
}

/// The values a read may return: any write that began before the read ended and that no
/// acknowledged write superseded before the read began: began after it ended and ended
/// before the read began. That holds for writes that failed too: a write's version is
/// fixed while its request runs, and one that begins after it ended gets a newer one
/// (every peer here reads one machine's clock; where clocks differ, the later write gets
/// past a newer failed one only if a holder reports it), whereas writes that overlap may
/// land in either order. `None` is allowed only if no
/// acknowledged write ended before the read began.
fn check(history: &History) -> Result<(), String> {
    for read in &history.reads {
        let writes: Vec<&Write> = history.writes.iter().filter(|w| w.key == read.key).collect();
        let superseded = |w: &Write| {
            writes.iter().any(|later| later.outcome == Outcome::Ok && later.began > w.ended && later.ended < read.began)
        };
        let valid = match &read.value {
            None => !writes.iter().any(|w| w.outcome == Outcome::Ok && w.ended < read.began),
            Some(value) => writes.iter().any(|w| &w.value == value && w.began < read.ended && !superseded(w)),
        };
        if !valid {
            let start = history.writes.iter().map(|w| w.began).min().expect("a read follows a write");
            let span = |began: Instant, ended: Instant| {
                format!("{}..{} ms", (began - start).as_millis(), (ended - start).as_millis())
            };
            let returned = writes.iter().find(|w| Some(&w.value) == read.value.as_ref());
            let newer =
                writes.iter().filter(|w| w.outcome == Outcome::Ok && w.ended < read.began).max_by_key(|w| w.ended);
            return Err(format!(
                "stale or invented read of {} at {}: {:?} (written {}); the last write acknowledged before it: {:?}",
                read.key,
                span(read.began, read.ended),
                read.value,
                returned.map_or("never".into(), |w| format!("{}, {:?}", span(w.began, w.ended), w.outcome)),
                newer.map(|w| format!("{} at {}", w.value, span(w.began, w.ended))),
            ));
        }
    }
    Ok(())
}

#[test]
fn quorum_reads_see_the_latest_acknowledged_write_through_churn() {
    let seed: u64 = std::env::var("SHOAL_HISTORY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    let secs: u64 = std::env::var("SHOAL_HISTORY_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let testnet = Arc::new(Testnet::up(5));
    let apis: Vec<String> = (1..=5).map(|peer| testnet.api(peer)).collect();
    let history = Arc::new(Mutex::new(History::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (apis, history) = (apis.clone(), history.clone());
            thread::spawn(move || {
                let mut random = XorShift(seed.wrapping_mul(31).wrapping_add(client as u64 + 1) | 1);
                let mut op = 0;
                while Instant::now() < deadline {
                    let api = &apis[random.below(apis.len())];
                    let key = KEYS[random.below(KEYS.len())];
                    if random.below(2) == 0 {
                        let value = format!("client {client} write {op}");
                        let done = write(api, key, value);
                        history.lock().unwrap().writes.push(done);
                    } else if let Some(done) = read(api, key) {
                        history.lock().unwrap().reads.push(done);
                    }
                    op += 1;
                }
            })
        })
        .collect();

    // The nemesis: one peer at a time is killed, then restarted with its data.
    let mut random = XorShift(seed | 1);
    while Instant::now() + Duration::from_secs(4) < deadline {
        let victim = 1 + random.below(5);
        eprintln!("kill {victim} at {} ms", started.elapsed().as_millis());
        testnet.run("kill", &[&victim.to_string()]);
        thread::sleep(Duration::from_millis(1500 + 500 * random.below(4) as u64));
        eprintln!("start {victim} at {} ms", started.elapsed().as_millis());
        testnet.run("start", &[&victim.to_string()]);
    }
    for client in clients {
        client.join().unwrap();
    }

    let history = history.lock().unwrap();
    let acknowledged = history.writes.iter().filter(|w| w.outcome == Outcome::Ok).count();
    eprintln!(
        "history (seed {seed}): {} writes, {acknowledged} acknowledged, {} reads",
        history.writes.len(),
        history.reads.len()
    );
    assert!(acknowledged > 20 && history.reads.len() > 20, "too little happened: {acknowledged} writes acked");
    check(&history).unwrap();

    // Healed: final reads at ALL lose no acknowledged write.
    let mut finals = History { writes: history.writes.clone(), reads: Vec::new() };
    for key in KEYS {
        let request = format!("GET /v1/names/{key}?consistency=all HTTP/1.1\r\nConnection: close\r\n\r\n");
        let began = Instant::now();
        let answer = http(&apis[0], &request);
        let value = match status_of(&answer) {
            200 => Some(complete_body(&answer).expect("a complete answer").to_owned()),
            404 => None,
            other => panic!("final read of {key} failed with {other}: {}", body_of(&answer)),
        };
        finals.reads.push(Read { key, value, began, ended: Instant::now() });
    }
    check(&finals).unwrap();
}

#[test]
fn the_checker_catches_a_stale_read() {
    let t = Instant::now();
    let at = |ms: u64| t + Duration::from_millis(ms);
    let w = |value: &str, began, ended| Write {
        key: "k",
        value: value.into(),
        began: at(began),
        ended: at(ended),
        outcome: Outcome::Ok,
    };
    let history = History {
        writes: vec![w("old", 0, 10), w("new", 20, 30)],
        reads: vec![Read { key: "k", value: Some("old".into()), began: at(40), ended: at(50) }],
    };
    assert!(check(&history).is_err());
    let concurrent = History {
        writes: history.writes.clone(),
        reads: vec![Read { key: "k", value: Some("old".into()), began: at(25), ended: at(50) }],
    };
    assert!(check(&concurrent).is_ok());
    let lost = History {
        writes: history.writes.clone(),
        reads: vec![Read { key: "k", value: None, began: at(40), ended: at(50) }],
    };
    assert!(check(&lost).is_err());

    // A failed write overlapping an acknowledged one may land after it; one that ended
    // before the acknowledged one began may not.
    let failed = |began, ended| Write { outcome: Outcome::Maybe, ..w("failed", began, ended) };
    let read_failed = vec![Read { key: "k", value: Some("failed".into()), began: at(40), ended: at(50) }];
    let overlapping = History { writes: vec![failed(15, 35), w("new", 20, 30)], reads: read_failed.clone() };
    assert!(check(&overlapping).is_ok());
    let before = History { writes: vec![failed(5, 15), w("new", 20, 30)], reads: read_failed };
    assert!(check(&before).is_err());
}
