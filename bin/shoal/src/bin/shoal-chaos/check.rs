//! The checks, each asserting exactly what ARCHITECTURE.md promises ("Faults and what
//! holds"): names by their history, objects by their bytes, placement by the peers' own
//! lists of what they hold, reclamation by what is left of deleted objects.

use std::collections::{BTreeMap, BTreeSet};

use shoal_api::{ClientError, ErrorCode};
use shoal_core::{Consistency, ObjectId, PeerKey, placement::closest};

use crate::history::{Action, History, Op, Outcome, short};
use crate::testnet::Testnet;
use crate::workload::{NAMES, read_intact, timed};

#[derive(Debug)]
pub struct Anomaly {
    pub check: &'static str,
    pub what: String,
    /// The operations involved, as the history shows them.
    pub ops: Vec<String>,
}

/// A write of a name as the checker sees it; the initial state ("no such name") is a
/// write acknowledged before the run.
struct NameWrite<'a> {
    value: Option<ObjectId>,
    op: Option<&'a Op>,
}

impl NameWrite<'_> {
    fn invoked(&self) -> std::time::Duration {
        self.op.map_or_else(Default::default, |op| op.invoked)
    }

    /// When the write stopped possibly taking effect: never, for one without an answer
    /// (the coordinator may still be at it).
    fn completed(&self) -> std::time::Duration {
        match self.op {
            None => Default::default(),
            Some(op) if matches!(op.outcome, Outcome::Unknown(_)) => std::time::Duration::MAX,
            Some(op) => op.completed,
        }
    }
}

fn name_writes<'a>(history: &'a History, name: &str) -> Vec<NameWrite<'a>> {
    let mut writes = vec![NameWrite { value: None, op: None }];
    for op in &history.ops {
        if let Some((written, value)) = op.name_write()
            && written == name
        {
            writes.push(NameWrite { value, op: Some(op) });
        }
    }
    writes
}

/// An acknowledged write that began after `x` ended and ended before `before`, with no
/// separation between `x` and the end of the read (`read_end`) or of that write: after it,
/// `x` must never be seen again.
fn superseding<'a>(
    history: &History,
    writes: &'a [NameWrite<'a>],
    x: &NameWrite<'_>,
    before: std::time::Duration,
    read_end: Option<std::time::Duration>,
) -> Option<&'a Op> {
    writes.iter().filter_map(|w| w.op).find(|w| {
        w.acked()
            && (x.op.is_none() || w.invoked > x.completed())
            && w.completed < before
            && !history.separated(x.invoked(), read_end.unwrap_or(w.completed))
    })
}

/// Every QUORUM read of a name saw the latest write acknowledged before it began, or one
/// that may have come later, unless a separation fell between the two.
pub fn name_reads(history: &History) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for name in NAMES {
        let writes = name_writes(history, name);
        for read in &history.ops {
            let Action::ReadName { name: read_name, found } = &read.action else { continue };
            if read_name != name || !read.acked() {
                continue;
            }
            let candidates: Vec<&NameWrite<'_>> =
                writes.iter().filter(|w| w.value == *found && w.invoked() < read.completed).collect();
            let stale: Vec<&Op> = candidates
                .iter()
                .filter_map(|x| superseding(history, &writes, x, read.invoked, Some(read.completed)))
                .collect();
            if candidates.is_empty() || stale.len() == candidates.len() {
                let mut ops = vec![read.to_string()];
                ops.extend(stale.iter().take(1).map(|op| format!("acknowledged before it: {op}")));
                anomalies.push(Anomaly {
                    check: "name-read",
                    what: format!("a QUORUM read of {name} missed a write acknowledged before it began"),
                    ops,
                });
            }
        }
    }
    anomalies
}

/// Reads every name at QUORUM through every live peer once the network settled: they must
/// agree, and the value must be one no acknowledged write superseded. Returns the final
/// binding of each name too.
pub async fn final_names(
    history: &History,
    testnet: &Testnet,
    live: &[usize],
) -> anyhow::Result<(BTreeMap<&'static str, Option<ObjectId>>, Vec<Anomaly>)> {
    let mut finals = BTreeMap::new();
    let mut anomalies = Vec::new();
    for name in NAMES {
        let mut seen = BTreeMap::new();
        for &peer in live {
            let client = testnet.client(peer)?;
            let value = match timed(client.head_named(name, Some(Consistency::Quorum))).await {
                Ok((_, headers)) => Some(headers.id),
                Err(crate::workload::Failure::Api(ClientError::Api(e))) if e.code == ErrorCode::NotFound => None,
                Err(_) => {
                    anomalies.push(Anomaly {
                        check: "name-final",
                        what: format!("peer {peer} could not read {name} at QUORUM after the network settled"),
                        ops: vec![],
                    });
                    continue;
                }
            };
            seen.insert(peer, value);
        }
        let values: BTreeSet<Option<ObjectId>> = seen.values().copied().collect();
        if values.len() > 1 {
            let views = seen.iter().map(|(p, v)| format!("peer {p}: {}", v.as_ref().map_or("none".into(), short)));
            anomalies.push(Anomaly {
                check: "name-final",
                what: format!("peers disagree on {name}: {}", views.collect::<Vec<_>>().join(", ")),
                ops: vec![],
            });
        }
        let Some(&value) = values.iter().next() else { continue };
        finals.insert(name, value);
        let writes = name_writes(history, name);
        let candidates: Vec<&NameWrite<'_>> = writes.iter().filter(|w| w.value == value).collect();
        let lost: Vec<&Op> = candidates
            .iter()
            .filter_map(|x| superseding(history, &writes, x, std::time::Duration::MAX, None))
            .collect();
        if candidates.is_empty() || lost.len() == candidates.len() {
            anomalies.push(Anomaly {
                check: "name-final",
                what: format!(
                    "{name} ends bound to {}, which an acknowledged write superseded",
                    value.as_ref().map_or("nothing".into(), short)
                ),
                ops: lost.iter().take(1).map(|op| op.to_string()).collect(),
            });
        }
    }
    Ok((finals, anomalies))
}

/// What each object created in the run must be at the end.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Readable, whole, from every peer.
    Live,
    /// Whole everywhere or absent everywhere (an unacknowledged put).
    AllOrNothing,
    /// Every copy of its chunks and manifest reclaimed.
    Gone,
    /// Its delete's outcome is unknown: either live or gone.
    Either,
    /// Put with a name that failed: gone once its lease ends or it recorded that its
    /// binding is dead, but kept until the name is written again if its coordinator died
    /// or reached no holder with that death (ARCHITECTURE.md, "Faults and what holds"),
    /// so only counted.
    MayLeak,
}

struct Object<'a> {
    id: ObjectId,
    chunks: &'a [String],
    fate: Fate,
    op: &'a Op,
}

fn objects<'a>(history: &'a History, finals: &BTreeMap<&str, Option<ObjectId>>) -> Vec<Object<'a>> {
    let deletes: BTreeMap<ObjectId, &Op> = history
        .ops
        .iter()
        .filter_map(|op| match op.action {
            Action::DeleteObject { id } => Some((id, op)),
            _ => None,
        })
        .collect();
    let bound: BTreeSet<ObjectId> = finals.values().flatten().copied().collect();
    let mut objects = Vec::new();
    for op in &history.ops {
        let (id, chunks, fate) = match &op.action {
            Action::PutObject { id, chunks, .. } => {
                let fate = match (op.acked(), deletes.get(id)) {
                    (true, None) => Fate::Live,
                    (false, None) => Fate::AllOrNothing,
                    (_, Some(delete)) if delete.acked() => Fate::Gone,
                    (_, Some(_)) => Fate::Either,
                };
                (*id, chunks, fate)
            }
            Action::PutName { id, chunks, .. } => {
                let fate = match (bound.contains(id), op.acked()) {
                    (true, _) => Fate::Live,
                    (false, true) => Fate::Gone,
                    (false, false) => Fate::MayLeak,
                };
                (*id, chunks, fate)
            }
            _ => continue,
        };
        objects.push(Object { id, chunks, fate, op });
    }
    objects
}

/// Every live object reads back whole from every live peer; every unacknowledged put left
/// all or nothing; no get during the run answered a live object with a 404 or broken
/// bytes, unless a separation made its holders unreachable.
pub async fn object_reads(
    history: &History,
    testnet: &Testnet,
    live: &[usize],
    finals: &BTreeMap<&str, Option<ObjectId>>,
) -> anyhow::Result<Vec<Anomaly>> {
    let mut anomalies = Vec::new();
    for op in &history.ops {
        let Action::GetObject { intact, .. } = op.action else { continue };
        let lost = match &op.outcome {
            Outcome::Ok => !intact,
            Outcome::Failed(why) => why.starts_with("NotFound") && !history.separated(op.invoked, op.completed),
            Outcome::Unknown(_) => false,
        };
        if lost {
            anomalies.push(Anomaly {
                check: "object-get",
                what: "a get of an acknowledged object found it missing or damaged".into(),
                ops: vec![op.to_string()],
            });
        }
    }
    for object in objects(history, finals) {
        if !matches!(object.fate, Fate::Live | Fate::AllOrNothing) {
            continue;
        }
        let mut reads = BTreeMap::new();
        for &peer in live {
            let client = testnet.client(peer)?;
            let read = match timed(read_intact(&client, &object.id)).await {
                Ok(true) => "whole",
                Ok(false) => "damaged",
                Err(crate::workload::Failure::Api(ClientError::Api(e))) if e.code == ErrorCode::NotFound => "absent",
                Err(_) => "unreadable",
            };
            reads.insert(peer, read);
        }
        let kinds: BTreeSet<&str> = reads.values().copied().collect();
        let fine = match object.fate {
            Fate::Live => kinds.len() == 1 && kinds.contains("whole"),
            _ => kinds.len() == 1 && (kinds.contains("whole") || kinds.contains("absent")),
        };
        if !fine {
            let views = reads.iter().map(|(p, r)| format!("peer {p}: {r}")).collect::<Vec<_>>().join(", ");
            anomalies.push(Anomaly {
                check: "object-final",
                what: format!("object {} ({:?}) reads {views}", short(&object.id), object.fate),
                ops: vec![object.op.to_string()],
            });
        }
    }
    Ok(anomalies)
}

/// What is not settled yet, and how many failed named puts left copies behind.
#[derive(Debug)]
pub struct Settling {
    pub anomalies: Vec<Anomaly>,
    pub leaked: usize,
    /// Objects to reclaim that a removed peer held: collection waits for it to be
    /// forgotten (`tombstone_lifetime`), as for any holder that left.
    pub held_up: usize,
}

/// Every item held by a live peer is on exactly its R closest live peers, and nothing
/// of a deleted or superseded object is left (checked until the network settles).
pub async fn placement_and_reclamation(
    history: &History,
    testnet: &Testnet,
    live: &[usize],
    removed: &[PeerKey],
    finals: &BTreeMap<&str, Option<ObjectId>>,
    r: usize,
) -> anyhow::Result<Settling> {
    let mut keys = BTreeMap::new();
    let mut holders: BTreeMap<(String, String), BTreeSet<PeerKey>> = BTreeMap::new();
    for &peer in live {
        let key = testnet.peer_key(peer).await?;
        for item in testnet.client(peer)?.local_items().await? {
            holders.entry((item.kind.name().to_owned(), item.id)).or_default().insert(key.clone());
        }
        keys.insert(peer, key);
    }
    let mut anomalies = Vec::new();
    let objects = objects(history, finals);
    // Chunks and manifests on their way out: repair leaves them be (it never restores
    // what is being collected), and the reclamation check below covers them.
    let going: BTreeSet<String> = objects
        .iter()
        .filter(|o| !matches!(o.fate, Fate::Live | Fate::AllOrNothing))
        .flat_map(|o| o.chunks.iter().cloned().chain([hex::encode(o.id.0)]))
        .collect();
    let misplaced: Vec<String> = holders
        .iter()
        .filter(|((kind, id), _)| kind == "references" || kind == "name" || !going.contains(id))
        .filter_map(|((kind, id), held_by)| {
            let wanted: BTreeSet<PeerKey> = closest(&hex::decode(id).ok()?, keys.values(), r).into_iter().collect();
            (*held_by != wanted).then(|| {
                let on: Vec<usize> = keys.iter().filter(|(_, k)| held_by.contains(k)).map(|(p, _)| *p).collect();
                let should: Vec<usize> = keys.iter().filter(|(_, k)| wanted.contains(k)).map(|(p, _)| *p).collect();
                format!("{kind} {} on peers {on:?}, should be on {should:?}", &id[..12])
            })
        })
        .collect();
    if !misplaced.is_empty() {
        anomalies.push(Anomaly {
            check: "placement",
            what: format!("{} items not on exactly their R closest peers", misplaced.len()),
            ops: misplaced.into_iter().take(5).collect(),
        });
    }
    let peers_holding = |kind: &str, id: &str| -> Vec<usize> {
        let held_by = holders.get(&(kind.to_owned(), id.to_owned()));
        keys.iter().filter(|(_, key)| held_by.is_some_and(|h| h.contains(key))).map(|(peer, _)| *peer).collect()
    };
    let everyone: Vec<&PeerKey> = keys.values().chain(removed).collect();
    let (mut leaked, mut held_up) = (0, 0);
    for object in objects.iter().filter(|o| matches!(o.fate, Fate::Gone | Fate::MayLeak)) {
        let id = hex::encode(object.id.0);
        let mut left = Vec::new();
        for (kind, key) in std::iter::once(("manifest", &id)).chain(object.chunks.iter().map(|c| ("chunk", c))) {
            let on = peers_holding(kind, key);
            if !on.is_empty() {
                let references = peers_holding("references", key);
                left.push(format!("{kind} {} on peers {on:?}, its references on {references:?}", &key[..12]));
            }
        }
        let mut object_keys =
            object.chunks.iter().filter_map(|chunk| hex::decode(chunk).ok()).chain([object.id.0.to_vec()]);
        let removed_holder = object_keys
            .any(|key| closest(&key, everyone.iter().copied(), r).iter().any(|holder| removed.contains(holder)));
        if left.is_empty() {
            continue;
        } else if object.fate == Fate::MayLeak {
            leaked += 1;
        } else if removed_holder {
            held_up += 1;
        } else {
            anomalies.push(Anomaly {
                check: "reclaimed",
                what: format!(
                    "object {} was deleted or superseded, and copies of it are left: {}",
                    short(&object.id),
                    left.join("; ")
                ),
                ops: vec![object.op.to_string()],
            });
        }
    }
    Ok(Settling { anomalies, leaked, held_up })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::history::Separation;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    fn op(action: Action, from_ms: u64, to_ms: u64, outcome: Outcome) -> Op {
        let (invoked, completed) = (Duration::from_millis(from_ms), Duration::from_millis(to_ms));
        Op { client: 0, peer: 1, action, invoked, completed, outcome }
    }

    fn bind(n: u8, from_ms: u64, to_ms: u64, outcome: Outcome) -> Op {
        op(Action::PutName { name: NAMES[0].into(), id: id(n), chunks: vec![] }, from_ms, to_ms, outcome)
    }

    fn read(found: Option<u8>, from_ms: u64, to_ms: u64) -> Op {
        op(Action::ReadName { name: NAMES[0].into(), found: found.map(id) }, from_ms, to_ms, Outcome::Ok)
    }

    fn history(ops: Vec<Op>) -> History {
        History { ops, ..History::default() }
    }

    #[test]
    fn a_read_that_misses_an_acknowledged_write_is_an_anomaly() {
        let stale = history(vec![bind(1, 0, 10, Outcome::Ok), bind(2, 20, 30, Outcome::Ok), read(Some(1), 40, 50)]);
        assert_eq!(name_reads(&stale).len(), 1);
        let fresh = history(vec![bind(1, 0, 10, Outcome::Ok), bind(2, 20, 30, Outcome::Ok), read(Some(2), 40, 50)]);
        assert!(name_reads(&fresh).is_empty());
        let missing = history(vec![bind(1, 0, 10, Outcome::Ok), read(None, 40, 50)]);
        assert_eq!(name_reads(&missing).len(), 1, "a name acknowledged before the read came back absent");
        let from_nowhere = history(vec![read(Some(9), 40, 50)]);
        assert_eq!(name_reads(&from_nowhere).len(), 1, "a value no one wrote");
    }

    #[test]
    fn concurrent_and_unanswered_writes_may_be_seen() {
        // The second write overlaps the first: either may win.
        let overlapping =
            history(vec![bind(1, 0, 30, Outcome::Ok), bind(2, 20, 40, Outcome::Ok), read(Some(1), 50, 60)]);
        assert!(name_reads(&overlapping).is_empty());
        // A write without an answer may take effect at any time after it began.
        let unanswered = history(vec![
            bind(1, 0, 10, Outcome::Unknown("timed out".into())),
            bind(2, 20, 30, Outcome::Ok),
            read(Some(1), 40, 50),
        ]);
        assert!(name_reads(&unanswered).is_empty());
        // One that answered an error is over when it answered.
        let failed = history(vec![
            bind(1, 0, 10, Outcome::Failed("InsufficientReplicas".into())),
            bind(2, 20, 30, Outcome::Ok),
            read(Some(1), 40, 50),
        ]);
        assert_eq!(name_reads(&failed).len(), 1);
    }

    #[test]
    fn a_separation_between_write_and_read_excuses_a_stale_read() {
        let mut stale = history(vec![bind(1, 0, 10, Outcome::Ok), bind(2, 20, 30, Outcome::Ok), read(Some(1), 40, 50)]);
        stale.separations.push(Separation { from: Duration::from_millis(15), to: Duration::from_millis(45) });
        assert!(name_reads(&stale).is_empty());
        stale.separations[0] = Separation { from: Duration::from_millis(60), to: Duration::from_millis(70) };
        assert_eq!(name_reads(&stale).len(), 1, "a separation after the read excuses nothing");
    }

    #[test]
    fn a_deleted_name_must_stay_deleted() {
        let unbind = op(Action::DeleteName { name: NAMES[0].into() }, 20, 30, Outcome::Ok);
        let back = history(vec![bind(1, 0, 10, Outcome::Ok), unbind.clone(), read(Some(1), 40, 50)]);
        assert_eq!(name_reads(&back).len(), 1);
        let gone = history(vec![bind(1, 0, 10, Outcome::Ok), unbind, read(None, 40, 50)]);
        assert!(name_reads(&gone).is_empty());
    }
}
