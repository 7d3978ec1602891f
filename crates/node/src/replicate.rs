//! Writes to an item's holders: one synced batch per holder of the R current ones, an
//! answer once the consistency level is met, the rest going on in the background; and the
//! references a put sends to its chunks' holders, grouped by holder.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use shoal_core::names::{NameRecord, merge};
use shoal_core::references::References;
use shoal_core::{ChunkId, Consistency, Hash32, ItemKey, ItemKind, PeerKey, codec};
use shoal_store::Store;

use crate::calls::Strategy;
use crate::error::describe_failures;
use crate::rpc::CallError;
use crate::serve::MAX_KEYS_PER_REQUEST;
use crate::{Network, Node, NodeError};

/// The first wait before a `Refer` goes again to a holder that lacked a chunk, and how
/// many times it goes again (waits double: 50 ms to 400 ms, 750 ms in all).
const REFER_AGAIN_AFTER: Duration = Duration::from_millis(50);
const REFER_RETRIES: usize = 4;

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
        let holders: Vec<PeerKey> = by_holder.keys().cloned().collect();
        let (node, set) = (self.clone(), set.clone());
        let mut answers = self.calls(holders, Strategy::All { finish: true }, move |holder| {
            let (node, set, ids) = (node.clone(), set.clone(), by_holder[&holder].clone());
            async move {
                // One request for each batch of the holder's chunks.
                let batches = ids.chunks(MAX_KEYS_PER_REQUEST).map(|ids| {
                    let (node, holder, set) = (&node, &holder, &set);
                    async move { (ids.to_vec(), node.refer_once_stored(holder, ids, set).await) }
                });
                Ok::<_, Infallible>(join_all(batches).await)
            }
        });
        let mut acks: HashMap<Hash32, usize> = HashMap::new();
        let mut short = chunks.len();
        let mut failures = Vec::new();
        while short > 0
            && let Some((holder, Ok(batches))) = answers.next().await
        {
            for (ids, answer) in batches {
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
                    Err(error) => failures.push((holder.to_string(), error.to_string())),
                }
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

    /// Merges `set` into the reference sets of `ids` on `holder`, and answers the ids whose
    /// chunk it lacks. A put goes on once its chunks met their level, so a holder's chunk
    /// write may still be on its way when the `Refer` arrives: the ids it lacks are sent
    /// again, after waits doubling from [`REFER_AGAIN_AFTER`], [`REFER_RETRIES`] times.
    async fn refer_once_stored(
        &self,
        holder: &PeerKey,
        ids: &[Hash32],
        set: &References,
    ) -> Result<Vec<Hash32>, CallError> {
        let sets = |ids: &[Hash32]| ids.iter().map(|id| (*id, set.clone())).collect();
        let mut lacking = self.refer_on(holder, sets(ids)).await?;
        let mut wait = REFER_AGAIN_AFTER;
        for _ in 0..REFER_RETRIES {
            if lacking.is_empty() {
                break;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
            match self.refer_on(holder, sets(&lacking)).await {
                Ok(still) => lacking = still,
                Err(_) => break,
            }
        }
        Ok(lacking)
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

        // Taken before anything is sent, so a put waits for slow replicas to catch up
        // instead of piling chunks up for them; all at once, so no put holds some slots
        // while it waits for the rest.
        let mut slots =
            Arc::clone(&self.inner.write_slots).acquire_many_owned(targets.len() as u32).await.expect("never closed");
        let node = self.clone();
        let mut done = self.calls(targets, Strategy::All { finish: true }, move |peer| {
            let (node, items, slot) = (node.clone(), items.clone(), slots.split(1).expect("a slot per target"));
            async move {
                let stored = node.store_on(&peer, items).await;
                drop(slot);
                stored
            }
        });
        let mut acks = 0;
        let mut newest: Option<NameRecord> = None;
        while acks < required {
            let Some((peer, result)) = done.next().await else { break };
            match (result, &sent_name) {
                (Ok(None), _) => acks += 1,
                // Even when it binds the same object: this write's references name its own
                // version, which the newer record has just superseded.
                (Ok(Some(kept)), Some(sent)) if kept.key() == sent.key() => {
                    failures.push((peer.to_string(), format!("kept the newer version {}", kept.version)));
                    newest = Some(newest.map_or(kept.clone(), |known| merge(known, kept)));
                }
                (Ok(Some(_)), _) => failures.push((peer.to_string(), "answered with another name's record".into())),
                (Err(error), _) => failures.push((peer.to_string(), error.to_string())),
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
}
