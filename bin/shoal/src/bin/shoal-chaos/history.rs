//! What the clients did: every operation with its outcome and times, and the faults that
//! ran meanwhile. Times are offsets from the start of the run.

use std::time::Duration;

use shoal_core::{Consistency, ObjectId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// The daemon answered with an error. It may still have taken effect in part (a name
    /// written on one holder of three), so the checker treats it as possibly applied.
    Failed(String),
    /// No answer: refused, broken off or timed out. Possibly applied.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub enum Action {
    /// `chunks`: the ids of its chunks, for the check that deleted objects are reclaimed.
    PutObject {
        id: ObjectId,
        size: u64,
        level: Consistency,
        chunks: Vec<String>,
    },
    DeleteObject {
        id: ObjectId,
    },
    /// A get of an object the client put; `intact` when every byte came and verified.
    GetObject {
        id: ObjectId,
        intact: bool,
    },
    /// Binds `name` to a new object `id` (streamed with the put).
    PutName {
        name: String,
        id: ObjectId,
        chunks: Vec<String>,
    },
    DeleteName {
        name: String,
    },
    /// A read at QUORUM: the id the name was bound to, `None` for "no such name".
    ReadName {
        name: String,
        found: Option<ObjectId>,
    },
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    /// The peer whose API the client asked.
    pub peer: usize,
    pub action: Action,
    pub invoked: Duration,
    pub completed: Duration,
    pub outcome: Outcome,
}

impl Op {
    pub fn acked(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// The name this op wrote, and the binding it wrote (`None` for a delete).
    pub fn name_write(&self) -> Option<(&str, Option<ObjectId>)> {
        match &self.action {
            Action::PutName { name, id, .. } => Some((name, Some(*id))),
            Action::DeleteName { name } => Some((name, None)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.action {
            Action::PutObject { .. } => "put",
            Action::DeleteObject { .. } => "rm",
            Action::GetObject { .. } => "get",
            Action::PutName { .. } => "bind",
            Action::DeleteName { .. } => "unbind",
            Action::ReadName { .. } => "read-name",
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = match &self.action {
            Action::PutObject { id, size, level, .. } => format!("put {} ({size} B) at {level}", short(id)),
            Action::DeleteObject { id } => format!("rm {}", short(id)),
            Action::GetObject { id, intact } => format!("get {} intact={intact}", short(id)),
            Action::PutName { name, id, .. } => format!("bind {name} -> {}", short(id)),
            Action::DeleteName { name } => format!("unbind {name}"),
            Action::ReadName { name, found } => {
                format!("read {name} -> {}", found.as_ref().map_or("none".to_owned(), short))
            }
        };
        let outcome = match &self.outcome {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Failed(why) => format!("failed: {why}"),
            Outcome::Unknown(why) => format!("unknown: {why}"),
        };
        write!(
            f,
            "[client {} via peer {} {:.3}..{:.3} s] {action}: {outcome}",
            self.client,
            self.peer,
            self.invoked.as_secs_f64(),
            self.completed.as_secs_f64()
        )
    }
}

pub fn short(id: &ObjectId) -> String {
    id.to_string()[..12].to_owned()
}

/// A fault as applied: when, and the command that applied it.
#[derive(Debug, Clone)]
pub struct AppliedFault {
    pub at: Duration,
    pub what: String,
}

/// A span during which some peers could not reach others: quorums taken on either side
/// need not meet.
#[derive(Debug, Clone, Copy)]
pub struct Separation {
    pub from: Duration,
    pub to: Duration,
}

#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<AppliedFault>,
    pub separations: Vec<Separation>,
}

impl History {
    /// Whether a separation overlapped the span from `from` to `to`.
    pub fn separated(&self, from: Duration, to: Duration) -> bool {
        self.separations.iter().any(|s| s.from <= to && from <= s.to)
    }
}
