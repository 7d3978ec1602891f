//! Listing names: pages in name order, merged from every counted peer, that say when a
//! peer did not answer.
//!
//! Each peer answers a page of the name records it holds (tombstones included, pins left
//! out) from its in-memory name index. The coordinator keeps the newest record of each
//! name. A peer that had more than it sent has only shown the names up to the last one it
//! sent, so the merged page is decided only up to the smallest such name; the next page
//! starts there. Answers stay bounded by [`LIST_PAGE_MAX`] records, whatever the number of
//! names.

use std::collections::BTreeMap;

use shoal_core::names::NameRecord;
use shoal_core::wire::LIST_PAGE_MAX;
use shoal_core::{ItemKey, codec};
use shoal_store::{Store, StoreError};
use tracing::warn;

use crate::calls::Strategy;
use crate::names::NameInfo;
use crate::{Network, Node, NodeError};

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePage {
    /// Live names, in name order.
    pub names: Vec<NameInfo>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    pub next: Option<String>,
    /// The peers that did not answer, and why: names that only they hold are missing.
    pub unanswered: Vec<(String, String)>,
}

impl NamePage {
    pub fn is_complete(&self) -> bool {
        self.unanswered.is_empty()
    }
}

/// A peer's page of the records it holds, and whether more match.
type PeerPage = (Vec<NameRecord>, bool);

impl<S: Store, N: Network> Node<S, N> {
    /// Up to `limit` (1 to [`LIST_PAGE_MAX`]) live names starting with `prefix` and coming
    /// after `after`, in name order, each once. Asks every counted peer: the cost grows
    /// with the size of the network and of the page, not of the whole listing.
    pub async fn list_names(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<NamePage, NodeError> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let (node, asked_prefix, asked_after) = (self.clone(), prefix.to_owned(), after.map(str::to_owned));
        let answers = self
            .calls(self.layout().peers().to_vec(), Strategy::All { finish: false }, move |peer| {
                let (node, prefix, after) = (node.clone(), asked_prefix.clone(), asked_after.clone());
                async move { node.names_of(&peer, &prefix, after.as_deref(), limit).await }
            })
            .every_answer()
            .await;

        let mut winners: BTreeMap<String, NameRecord> = BTreeMap::new();
        // Every name up to this one is decided; past it, a peer may hold more.
        let mut decided_up_to: Option<String> = None;
        let mut unanswered = Vec::new();
        for (peer, answer) in answers {
            let (records, more) = match answer {
                Ok(page) => page,
                Err(error) => {
                    unanswered.push((peer.to_string(), error.to_string()));
                    continue;
                }
            };
            let fits = |record: &NameRecord| {
                record.name.starts_with(prefix) && after.is_none_or(|after| record.name.as_str() > after)
            };
            let records: Vec<NameRecord> = records.into_iter().filter(fits).collect();
            if more {
                let Some(last) = records.iter().map(|record| &record.name).max() else {
                    unanswered.push((peer.to_string(), "said it had more names but sent none".to_owned()));
                    continue;
                };
                if decided_up_to.as_ref().is_none_or(|bound| last < bound) {
                    decided_up_to = Some(last.clone());
                }
            }
            for record in records {
                match winners.get(&record.name) {
                    Some(known) if !record.wins_over(known) => {}
                    _ => {
                        winners.insert(record.name.clone(), record);
                    }
                }
            }
        }

        let mut names = Vec::new();
        let mut next = decided_up_to.clone();
        let decided = winners.values().take_while(|record| decided_up_to.as_ref().is_none_or(|b| &record.name <= b));
        for record in decided {
            if names.len() == limit {
                next = names.last().map(|info: &NameInfo| info.name.clone());
                break;
            }
            names.extend(NameInfo::of(record));
        }
        if !unanswered.is_empty() {
            warn!("listing without {} peers: {}", unanswered.len(), crate::error::describe_failures(&unanswered));
        }
        Ok(NamePage { names, next, unanswered })
    }

    /// This peer's page: the first `limit` name records it holds under `prefix` after
    /// `after`, in name order, and whether more match. A record that fails verification is
    /// skipped (and replaced from another holder); one that cannot be read fails the page,
    /// so that nobody takes a partial page for the complete one.
    pub(crate) async fn local_names(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PeerPage, String> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let mut records = Vec::new();
        let mut cursor = after.map(str::to_owned);
        loop {
            let wanted = limit + 1 - records.len();
            let batch: Vec<(String, ItemKey)> = {
                let index = self.inner.index.lock().expect("never poisoned");
                index.names(prefix, cursor.as_deref()).take(wanted).map(|(name, key)| (name.to_owned(), key)).collect()
            };
            let exhausted = batch.len() < wanted;
            cursor = batch.last().map(|(name, _)| name.clone()).or(cursor);
            records.extend(self.read_records(batch.into_iter().map(|(_, key)| key).collect()).await?);
            if exhausted || records.len() > limit {
                break;
            }
        }
        let more = records.len() > limit;
        records.truncate(limit);
        Ok((records, more))
    }

    /// The name records under `keys` in this peer's store, in order, without those that
    /// are gone or fail verification.
    async fn read_records(&self, keys: Vec<ItemKey>) -> Result<Vec<NameRecord>, String> {
        let (records, corrupt) = self
            .with_store(move |store| {
                let (mut records, mut corrupt) = (Vec::new(), Vec::new());
                for key in keys {
                    match store.get(&key) {
                        Ok(Some(value)) => records.push(codec::decode(&value).expect("verified by the store")),
                        Ok(None) => {}
                        Err(StoreError::Corrupt { .. }) => corrupt.push(key),
                        Err(error) => return Err(error),
                    }
                }
                Ok((records, corrupt))
            })
            .await
            .map_err(|error| {
                self.inner.counters.read_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!("cannot read the local name records: {error}");
                format!("cannot read its name records: {error}")
            })?;
        for key in corrupt {
            warn!(item = ?key, "a local name record fails verification");
            self.start_corrupt_repair(key);
        }
        Ok(records)
    }
}
