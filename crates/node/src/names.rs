//! Named objects: reads and writes of name records at a consistency level, read repair,
//! and deletes as tombstones.
//!
//! A name record lives on the R peers closest to its key. A read asks every holder, needs
//! answers from as many as the consistency level says, returns the winner of their
//! versions, and (at QUORUM and ALL) writes the winner back to holders that answered with
//! an older version or none. A write sends a version from the hybrid clock; a holder that
//! keeps a newer record sends it back, and the coordinator moves
//! its clock past that record and writes again. With R + W > N, every write acknowledged
//! before is on a holder that answers the write, so the write that succeeds is newer than
//! all of them (or they bind the same thing).

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use shoal_core::names::{Binding, NameRecord, check_clock_offset, name_key, validate_name};
use shoal_core::{Consistency, ItemKey, ObjectId, PeerKey, codec};
use shoal_store::Store;
use tracing::debug;

use crate::calls::Strategy;
use crate::error::describe_failures;
use crate::write::{PutReceipt, UnboundObject};
use crate::{Network, Node, NodeError};

/// A live name as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameInfo {
    pub name: String,
    pub id: ObjectId,
    pub size: u64,
    /// The version, `wall_ms.logical.writer`: newer versions win.
    pub version: String,
    /// When the binding was written, in milliseconds since the Unix epoch.
    pub modified_ms: u64,
}

impl NameInfo {
    pub(crate) fn of(record: &NameRecord) -> Option<Self> {
        match record.binding {
            Binding::Object { id, size } => Some(Self {
                name: record.name.clone(),
                id,
                size,
                version: record.version.to_string(),
                modified_ms: record.version.wall_ms,
            }),
            Binding::Tombstone => None,
        }
    }
}

/// How many times a name write goes again past newer versions that holders kept. Each
/// attempt is newer than everything seen before, so only writers racing it can use them up.
const WRITE_ATTEMPTS: usize = 3;

impl<S: Store, N: Network> Node<S, N> {
    /// The name's current binding, read at `consistency`; `None` if it never existed or
    /// was deleted.
    pub async fn resolve_name(&self, name: &str, consistency: Consistency) -> Result<Option<NameInfo>, NodeError> {
        validate_name(name).map_err(|e| NodeError::BadName(e.to_string()))?;
        Ok(self.read_name(name, consistency).await?.as_ref().and_then(NameInfo::of))
    }

    /// Stores the object streamed in `body` and binds `name` to it.
    pub async fn put_named<B, E>(
        &self,
        name: &str,
        body: B,
        consistency: Consistency,
    ) -> Result<(PutReceipt, NameInfo), NodeError>
    where
        B: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        validate_name(name).map_err(|e| NodeError::BadName(e.to_string()))?;
        let (receipt, record) = self.store_and_bind(Some(name), body, consistency).await?;
        Ok((receipt, NameInfo::of(&record).expect("a binding, not a tombstone")))
    }

    /// Deletes `name` (a tombstone newer than every version read at `consistency`).
    pub async fn delete_name(&self, name: &str, consistency: Consistency) -> Result<(), NodeError> {
        validate_name(name).map_err(|e| NodeError::BadName(e.to_string()))?;
        if self.resolve_name(name, consistency).await?.is_none() {
            return Err(NodeError::NameNotFound(name.to_owned()));
        }
        self.write_binding(name, Binding::Tombstone, consistency, None).await?;
        Ok(())
    }

    /// Deletes an unnamed object: its pin becomes a tombstone, and collection removes its
    /// chunks from every replica after the grace period unless a name still refers to it.
    pub async fn delete_object(&self, id: ObjectId, consistency: Consistency) -> Result<(), NodeError> {
        let pin = self.read_name(&id.to_hex(), consistency).await?;
        if pin.is_none_or(|pin| pin.is_tombstone()) {
            return Err(NodeError::NotFound(id));
        }
        self.write_binding(&id.to_hex(), Binding::Tombstone, consistency, None).await?;
        Ok(())
    }

    /// Reads a name's record from its holders: the winner among the first answers that
    /// meet `consistency` in every holder set (the current one, and those before a recent
    /// arrival: see [`crate::policy`]). At QUORUM and ALL, with R + W > N, these include
    /// every acknowledged write, and waiting for more would only wait for the slowest
    /// holder. At QUORUM and ALL the winner is written back to current holders among them
    /// that had an older one or none.
    pub(crate) async fn read_name(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<Option<NameRecord>, NodeError> {
        let key = name_key(name);
        let replicas = self.placement(&key).await?;
        let node = self.clone();
        let mut answers = self.calls(replicas.everyone(), Strategy::All { finish: false }, move |peer| {
            let node = node.clone();
            async move { node.fetch_record(&peer, key).await }
        });
        let mut failures: Vec<_> = self.placement_shortfall(replicas.current()).into_iter().collect();
        let mut answered: Vec<(PeerKey, Option<NameRecord>)> = Vec::new();
        let met = |answered: &[(PeerKey, Option<NameRecord>)]| {
            replicas.met(consistency, &answered.iter().map(|(peer, _)| peer).collect::<Vec<_>>())
        };
        while !met(&answered)
            && let Some((peer, answer)) = answers.next().await
        {
            match answer {
                Ok(record) => answered.push((peer, record)),
                Err(reason) => failures.push((peer.to_string(), reason)),
            }
        }
        if !met(&answered) {
            return Err(NodeError::InsufficientAcks {
                key,
                got: answered.len(),
                required: consistency.required(self.inner.config.replication_factor),
                failures: describe_failures(&failures),
            });
        }
        let winner = answered.iter().filter_map(|(_, record)| record.clone()).reduce(shoal_core::names::merge);
        if let Some(winner) = &winner {
            self.inner.clock.lock().expect("never poisoned").observe(winner.version);
            if consistency != Consistency::One {
                answered.retain(|(peer, _)| replicas.current().contains(peer));
                self.read_repair(winner, &answered);
            }
        }
        Ok(winner)
    }

    /// Writes `winner` back, in the background, to holders that answered without it.
    /// Only while replica writes have room: anti-entropy brings the record otherwise.
    fn read_repair(&self, winner: &NameRecord, answered: &[(PeerKey, Option<NameRecord>)]) {
        let value: Bytes = codec::encode(winner).into();
        for (peer, record) in answered {
            if record.as_ref() == Some(winner) {
                continue;
            }
            let Ok(slot) = Arc::clone(&self.inner.write_slots).try_acquire_owned() else {
                debug!(%peer, "no room for a read repair: anti-entropy will bring the record");
                continue;
            };
            let (node, peer, value, key) = (self.clone(), peer.clone(), value.clone(), winner.key());
            self.inner.tasks.spawn(async move {
                if let Err(error) = node.store_on(&peer, vec![(key, value)]).await {
                    debug!(%peer, "read repair failed: {error}");
                }
                drop(slot);
            });
        }
    }

    /// `key`'s record from `peer` (this peer's store included), verified.
    pub(crate) async fn fetch_record(&self, peer: &PeerKey, key: ItemKey) -> Result<Option<NameRecord>, String> {
        let Some(value) = self.fetch_from(peer, key).await.map_err(|error| error.to_string())? else {
            return Ok(None);
        };
        shoal_core::verify_item(&key, &value).map_err(|e| format!("sent a bad record: {e}"))?;
        let record: NameRecord = codec::decode(&value).expect("verified above");
        check_clock_offset(record.version, self.now_ms()).map_err(|e| format!("sent a record from far ahead: {e}"))?;
        Ok(Some(record))
    }

    /// Writes `binding` for `name`, after `object` (the object it binds, whose references
    /// must name the record's version first), as a version newer than every one this peer
    /// has seen; while holders answer with a newer record, writes
    /// again past it. Returns the record written and the acks it got.
    pub(crate) async fn write_binding(
        &self,
        name: &str,
        binding: Binding,
        consistency: Consistency,
        object: Option<&UnboundObject>,
    ) -> Result<(NameRecord, usize), NodeError> {
        for _ in 0..WRITE_ATTEMPTS {
            let version = self.next_version()?;
            let record = NameRecord { name: name.to_owned(), version, binding: binding.clone() };
            let replicated = match object {
                Some(object) => self.write_bound_object(&record, object, consistency).await?,
                None => self.replicate(vec![(record.key(), codec::encode(&record).into())], consistency).await?,
            };
            let Some(newer) = replicated.newer else { return Ok((record, replicated.acks)) };
            if let Err(ahead) = check_clock_offset(newer.version, self.now_ms()) {
                // A record no peer accepts now (stored before clocks were bounded, or by a
                // holder's own fast clock) is a failed ack, not a version to write past:
                // reads and collection refuse it too.
                if replicated.acks >= consistency.required(self.inner.config.replication_factor) {
                    return Ok((record, replicated.acks));
                }
                return Err(NodeError::Unavailable {
                    what: format!("name {name:?}"),
                    failures: format!("a holder keeps a record from far ahead: {ahead}"),
                });
            }
            debug!(name, "holders kept the newer version {}: writing past it", newer.version);
            self.inner.clock.lock().expect("never poisoned").observe(newer.version);
        }
        Err(NodeError::Unavailable {
            what: format!("name {name:?}"),
            failures: format!("newer versions from other writers kept arriving through {WRITE_ATTEMPTS} attempts"),
        })
    }
}
