//! The clients: each talks to one peer's API (as a client beside that host would) and
//! puts, gets, deletes, binds, unbinds and reads names, in an order its seed decides.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use shoal_api::{Client, ClientError};
use shoal_core::{Consistency, ObjectId};

use crate::history::{Action, Op, Outcome};

/// Names the clients share, so their writes race.
pub const NAMES: [&str; 5] = ["chaos/a", "chaos/b", "chaos/c", "chaos/d", "chaos/e"];
/// Longer than any request should take; an op past it is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two ops of one client, so the run does not fill the disks.
const THINK_TIME: Duration = Duration::from_millis(50);

/// SplitMix64: small, and a seed replays the same run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Another generator, independent of this one from here on.
    pub fn fork(&mut self) -> Self {
        Self(self.next())
    }

    fn bytes(&mut self, len: usize) -> Bytes {
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(len);
        Bytes::from(bytes)
    }
}

/// Mostly small objects, some of several chunks.
fn object_size(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0 => 2 * shoal_core::CHUNK_SIZE + 12_345,
        1..=4 => 300 << 10,
        _ => 16 << 10,
    }
}

pub struct Clients {
    pub start: Instant,
    pub ops: Arc<Mutex<Vec<Op>>>,
}

struct ClientRun {
    index: usize,
    peer: usize,
    api: Client,
    rng: Rng,
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
    /// Objects this client put and has not deleted.
    mine: Vec<ObjectId>,
}

impl Clients {
    /// Runs `count` clients until `until`; client `c` uses peer `peers[c % len]`.
    pub async fn run(&self, count: usize, peers: Vec<(usize, Client)>, rng: &mut Rng, until: Instant) {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..count {
            let (peer, api) = peers[index % peers.len()].clone();
            let run = ClientRun {
                index,
                peer,
                api,
                rng: rng.fork(),
                start: self.start,
                ops: self.ops.clone(),
                mine: Vec::new(),
            };
            tasks.spawn(run.until(until));
        }
        while tasks.join_next().await.is_some() {}
    }
}

impl ClientRun {
    async fn until(mut self, until: Instant) {
        while Instant::now() < until {
            self.one().await;
            tokio::time::sleep(THINK_TIME).await;
        }
    }

    async fn one(&mut self) {
        let invoked = self.start.elapsed();
        let roll = self.rng.below(100);
        let name = NAMES[self.rng.below(NAMES.len())];
        let (action, outcome) = match roll {
            0..=24 => self.put_object().await,
            25..=32 if !self.mine.is_empty() => self.delete_object().await,
            25..=44 if !self.mine.is_empty() => self.get_object().await,
            25..=44 => self.put_object().await,
            45..=69 => self.put_name(name).await,
            70..=76 => {
                let result = timed(self.api.delete_name(name, Some(Consistency::Quorum))).await;
                (Action::DeleteName { name: name.to_owned() }, outcome_of(&result))
            }
            _ => self.read_name(name).await,
        };
        let op = Op { client: self.index, peer: self.peer, action, invoked, completed: self.start.elapsed(), outcome };
        self.ops.lock().expect("never poisoned").push(op);
    }

    async fn put_object(&mut self) -> (Action, Outcome) {
        let len = object_size(&mut self.rng);
        let bytes = self.rng.bytes(len);
        let id = ObjectId(*blake3::hash(&bytes).as_bytes());
        let level = [Consistency::Quorum, Consistency::Quorum, Consistency::All, Consistency::One][self.rng.below(4)];
        let size = bytes.len() as u64;
        let chunks = chunk_ids(&bytes);
        let result = timed(self.api.put(body(bytes), Some(level))).await;
        if result.is_ok() {
            self.mine.push(id);
        }
        (Action::PutObject { id, size, level, chunks }, outcome_of(&result))
    }

    async fn delete_object(&mut self) -> (Action, Outcome) {
        let id = self.mine.swap_remove(self.rng.below(self.mine.len()));
        let result = timed(self.api.delete_object(&id, Some(Consistency::Quorum))).await;
        (Action::DeleteObject { id }, outcome_of(&result))
    }

    async fn get_object(&mut self) -> (Action, Outcome) {
        let id = self.mine[self.rng.below(self.mine.len())];
        let result = timed(async { read_intact(&self.api, &id).await }).await;
        let intact = matches!(result, Ok(true));
        (Action::GetObject { id, intact }, outcome_of(&result))
    }

    async fn put_name(&mut self, name: &str) -> (Action, Outcome) {
        let len = object_size(&mut self.rng);
        let bytes = self.rng.bytes(len);
        let id = ObjectId(*blake3::hash(&bytes).as_bytes());
        let chunks = chunk_ids(&bytes);
        let result = timed(self.api.put_named(name, body(bytes), Some(Consistency::Quorum))).await;
        (Action::PutName { name: name.to_owned(), id, chunks }, outcome_of(&result))
    }

    async fn read_name(&mut self, name: &str) -> (Action, Outcome) {
        let result = timed(self.api.head_named(name, Some(Consistency::Quorum))).await;
        let (found, result) = match result {
            Ok((_, headers)) => (Some(headers.id), Ok(())),
            Err(Failure::Api(ClientError::Api(e))) if e.code == shoal_api::ErrorCode::NotFound => (None, Ok(())),
            Err(e) => (None, Err(e)),
        };
        (Action::ReadName { name: name.to_owned(), found }, outcome_of(&result))
    }
}

/// Whether the whole object came and hashes to its id (the daemon verifies every chunk; a
/// body that breaks off is not intact).
pub async fn read_intact(api: &Client, id: &ObjectId) -> Result<bool, ClientError> {
    let mut download = api.get(id, None).await?;
    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    while let Some(piece) = download.bytes.next().await {
        let piece = piece?;
        len += piece.len() as u64;
        hasher.update(&piece);
    }
    Ok(len == download.info.size && ObjectId(*hasher.finalize().as_bytes()) == *id)
}

/// The hex ids of an object's chunks.
fn chunk_ids(bytes: &[u8]) -> Vec<String> {
    bytes.chunks(shoal_core::CHUNK_SIZE).map(|chunk| blake3::hash(chunk).to_hex().to_string()).collect()
}

fn body(bytes: Bytes) -> futures::stream::Once<futures::future::Ready<Result<Bytes, std::io::Error>>> {
    futures::stream::once(futures::future::ready(Ok(bytes)))
}

pub enum Failure {
    Api(ClientError),
    TimedOut,
}

pub async fn timed<T>(call: impl Future<Output = Result<T, ClientError>>) -> Result<T, Failure> {
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(result) => result.map_err(Failure::Api),
        Err(_) => Err(Failure::TimedOut),
    }
}

fn outcome_of<T>(result: &Result<T, Failure>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(Failure::Api(ClientError::Api(e))) => Outcome::Failed(format!("{:?}: {}", e.code, e.message)),
        Err(Failure::Api(e)) => Outcome::Unknown(e.to_string()),
        Err(Failure::TimedOut) => Outcome::Unknown(format!("no answer within {OP_TIMEOUT:?}")),
    }
}
