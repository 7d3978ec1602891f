//! Writes to an item's holders: one synced batch per holder of the R current ones, an
//! answer once the consistency level is met, the rest going on in the background; and the
//! references a put sends to its chunks' holders, grouped by holder.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use shoal_core::names::{NameRecord, merge};
use shoal_core::references::References;
use shoal_core::wire::{Request, Response};
use shoal_core::{ChunkId, Consistency, Hash32, ItemKey, ItemKind, PeerKey, codec};
use shoal_store::Store;
use tokio::sync::mpsc;

use crate::error::describe_failures;
use crate::serve::MAX_KEYS_PER_REQUEST;
use crate::{Network, Node, NodeError};

/// What a replicated batch got.
pub(crate) struct Replicated {
    /// Replicas that took every item.
    pub acks: usize,
    /// The newest record of the batch's name that a replica kept
    /// instead of the one sent: the caller writes again past it.
    pub newer: Option<NameRecord>,
}

impl<S: Store, N: Network> Node<S, N> {
    /// Merges `set` into the reference sets of `chunks` on their holders, one request per
    /// holder, and returns, once every chunk has what `consistency` asks for, the fewest
    /// acks a chunk got (`usize::MAX` if there are none). Only a holder that also holds
    /// the chunk acks it. Requests still out then go on in the background: a holder left
    /// with the lease alone would count for nothing once the lease ends, and anti-entropy
    /// could bring it the binding only while another holder is there.
    pub(crate) async fn refer(
        &self,
        chunks: &[ChunkId],
        set: &References,
        consistency: Consistency,
    ) -> Result<usize, NodeError> {
        let required = consistency.required(self.inner.config.replication_factor);
        let placements: Vec<Vec<PeerKey>> =
            stream::iter(chunks.iter().copied())
                .map(|chunk| async move {
                    Ok::<_, NodeError>(self.placement(&ItemKey::chunk(chunk)).await?.current().to_vec())
                })
                .buffered(self.inner.config.chunks_in_flight)
                .try_collect()
                .await?;
        let mut by_holder: BTreeMap<PeerKey, Vec<Hash32>> = BTreeMap::new();
        for (chunk, holders) in chunks.iter().zip(placements) {
            for holder in holders {
                by_holder.entry(holder).or_default().push(chunk.0);
            }
        }
        let requests: Vec<(PeerKey, Vec<Hash32>)> = by_holder
            .into_iter()
            .flat_map(|(holder, ids)| {
                ids.chunks(MAX_KEYS_PER_REQUEST).map(|ids| (holder.clone(), ids.to_vec())).collect::<Vec<_>>()
            })
            .collect();
        let (answer_tx, mut answers) = mpsc::channel(requests.len().max(1));
        for (holder, ids) in requests {
            let (node, answer_tx) = (self.clone(), answer_tx.clone());
            let sets = ids.iter().map(|id| (*id, set.clone())).collect();
            self.inner.tasks.spawn(async move {
                let answer = node.refer_on(&holder, sets).await;
                let _ = answer_tx.send((holder, ids, answer)).await;
            });
        }
        drop(answer_tx);
        let mut acks: HashMap<Hash32, usize> = HashMap::new();
        let mut short = chunks.len();
        let mut failures = Vec::new();
        while short > 0
            && let Some((holder, ids, answer)) = answers.recv().await
        {
            match answer {
                Ok(without_chunk) => {
                    if !without_chunk.is_empty() {
                        failures.push((holder.to_string(), format!("lacks {} of the chunks", without_chunk.len())));
                    }
                    for id in ids.iter().filter(|id| !without_chunk.contains(id)) {
                        let got = acks.entry(*id).or_default();
                        *got += 1;
                        short -= usize::from(*got == required);
                    }
                }
                Err(reason) => failures.push((holder.to_string(), reason)),
            }
        }
        let fewest = chunks.iter().map(|chunk| acks.get(&chunk.0).copied().unwrap_or(0)).min();
        match chunks.iter().find(|chunk| acks.get(&chunk.0).copied().unwrap_or(0) < required) {
            Some(chunk) => Err(NodeError::InsufficientAcks {
                key: ItemKey::references(chunk.0),
                got: acks.get(&chunk.0).copied().unwrap_or(0),
                required,
                failures: describe_failures(&failures),
            }),
            None => Ok(fewest.unwrap_or(usize::MAX)),
        }
    }

    /// Sends `sets` to `peer`; returns the ids whose chunk it does not hold.
    async fn refer_on(&self, peer: &PeerKey, sets: Vec<(Hash32, References)>) -> Result<Vec<Hash32>, String> {
        if peer == self.local_peer() {
            return self.refer_local(sets).await.map_err(|e| e.to_string());
        }
        self.call(peer, Request::Refer { sets }, |answer| match answer {
            Response::Referred { without_chunk } => Ok(without_chunk),
            other => Err(other),
        })
        .await
    }

    /// Writes items that share one id (hence their R closest peers) to those peers, one
    /// synced batch each, and returns once `consistency` is met. The remaining writes go
    /// on in the background; a node-wide limit on outstanding writes keeps slow replicas
    /// from piling up chunks in memory.
    ///
    /// A replica that kept a newer record of the batch's name (even one binding the same object) did
    /// not take the write. If any answered so before the level was met, the newest such
    /// record comes back in [`Replicated::newer`], instead of an error, even if the level
    /// was met: the write is older than something a holder has.
    pub(crate) async fn replicate(
        &self,
        items: Vec<(ItemKey, Bytes)>,
        consistency: Consistency,
    ) -> Result<Replicated, NodeError> {
        let key = items.first().expect("something to replicate").0;
        let sent_name: Option<NameRecord> = items
            .iter()
            .find(|(item, _)| item.kind == ItemKind::Name)
            .map(|(_, value)| codec::decode(value).expect("a record we encoded"));
        let replicas = self.inner.config.replication_factor;
        let required = consistency.required(replicas);
        let targets = self.placement(&key).await?.current().to_vec();
        let mut failures: Vec<_> = self.placement_shortfall(&targets).into_iter().collect();

        let (done_tx, mut done) = mpsc::channel(targets.len().max(1));
        for peer in targets {
            let slot = self.inner.write_slots.clone().acquire_owned().await.expect("never closed");
            let (node, items, done_tx) = (self.clone(), items.clone(), done_tx.clone());
            self.inner.tasks.spawn(async move {
                let result = node.store_on(&peer, items).await;
                drop(slot);
                let _ = done_tx.send((peer, result)).await;
            });
        }
        drop(done_tx);

        let mut acks = 0;
        let mut newest: Option<NameRecord> = None;
        while acks < required {
            let Some((peer, result)) = done.recv().await else { break };
            match (result, &sent_name) {
                (Ok(None), _) => acks += 1,
                // Even when it binds the same object: this write's references name its own
                // version, which the newer record has just superseded.
                (Ok(Some(kept)), Some(sent)) if kept.key() == sent.key() => {
                    failures.push((peer.to_string(), format!("kept the newer version {}", kept.version)));
                    newest = Some(newest.map_or(kept.clone(), |known| merge(known, kept)));
                }
                (Ok(Some(_)), _) => failures.push((peer.to_string(), "answered with another name's record".into())),
                (Err(reason), _) => failures.push((peer.to_string(), reason)),
            }
        }
        if newest.is_some() {
            return Ok(Replicated { acks, newer: newest });
        }
        if acks < required {
            return Err(NodeError::InsufficientAcks {
                key,
                got: acks,
                required,
                failures: describe_failures(&failures),
            });
        }
        Ok(Replicated { acks, newer: None })
    }

    /// Stores `items` on `peer`; returns the newer record of their name that it kept, if any.
    pub(crate) async fn store_on(
        &self,
        peer: &PeerKey,
        items: Vec<(ItemKey, Bytes)>,
    ) -> Result<Option<NameRecord>, String> {
        if peer == self.local_peer() {
            return self.store_local(items).await.map_err(|e| e.to_string());
        }
        self.call(peer, Request::Store { items }, |answer| match answer {
            Response::Stored { newer } => Ok(newer),
            other => Err(other),
        })
        .await
    }
}
