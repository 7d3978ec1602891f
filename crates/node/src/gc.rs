//! Space reclamation: the chunks and manifests of objects that no name or pin refers to
//! are removed from every replica after a grace period.
//!
//! Mark and sweep, spread over the peers and repeated every `gc_interval`. Every holder of
//! a live name record (a user's name, or the pin an unnamed object gets, named by its id)
//! marks the object's manifest on the manifest's holders; every holder of a recently
//! marked manifest marks its chunks on the chunks' holders. A chunk shared by two objects
//! is marked through both, so deleting one leaves it. A peer deletes a manifest or chunk
//! that nothing marked for `gc_grace`: a deleted object's manifest goes one grace period
//! after its last name, its chunks within a second one. Fresh items count as marked when they arrive, and
//! so does everything when a peer starts, so a put in progress (chunks first, manifest
//! next, name last) and a peer that just restarted never lose anything; a put that runs
//! longer than a collection interval marks the chunks it already wrote again, so even a
//! put slower than the grace period keeps them. Repair does not
//! fetch back what this peer collected recently from a peer that has not swept it yet.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use shoal_core::names::Binding;
use shoal_core::wire::{Request, Response};
use shoal_core::{ItemKey, ItemKind, Manifest, PeerKey, codec};
use shoal_store::Store;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::repair::MAX_KEYS_PER_REQUEST;
use crate::{Network, Node};

impl<S: Store, N: Network> Node<S, N> {
    /// Records that `key` is referenced (or fresh) as of now.
    pub(crate) fn mark(&self, key: ItemKey) {
        if matches!(key.kind, ItemKind::Chunk | ItemKind::Manifest) {
            self.inner.marks.lock().expect("never poisoned").insert(key, Instant::now());
        }
    }

    /// Marks the items of `keys` this peer holds.
    pub(crate) fn mark_held(&self, keys: &[ItemKey]) {
        let index = self.inner.index.lock().expect("never poisoned");
        for key in keys.iter().filter(|key| index.contains(key)) {
            self.mark(*key);
        }
    }

    /// Whether `key` was marked within the grace period. An item never marked since this
    /// peer started counts as marked now: its grace period starts here.
    fn marked_within_grace(&self, key: &ItemKey, now: Instant) -> bool {
        let mut marks = self.inner.marks.lock().expect("never poisoned");
        let marked = *marks.entry(*key).or_insert(now);
        now.duration_since(marked) < self.inner.config.gc_grace
    }

    /// Runs collection rounds for as long as the future is polled.
    pub(crate) async fn run_gc(self) {
        loop {
            tokio::time::sleep(self.inner.config.gc_interval).await;
            self.gc_round().await;
        }
    }

    /// One round: mark what this peer's names and live manifests refer to, then sweep
    /// what nothing marked for the grace period.
    ///
    /// A round that cannot read what it marks from (a name record or a manifest: an I/O
    /// error, a copy that fails verification or waits in quarantine) stops before it
    /// sweeps: a reference that could not be read is not an absent one.
    pub async fn gc_round(&self) {
        let now = Instant::now();
        let mut referenced = Vec::new();
        if self.inner.quarantined.lock().expect("never poisoned").iter().any(|key| key.kind != ItemKind::Chunk) {
            debug!("collection skips its round: a reference waits for a verified copy");
            return;
        }
        let Ok((names, 0)) = self.scan_names("").await else { return };
        for record in names {
            if let Binding::Object { id, .. } = record.binding {
                referenced.push(ItemKey::manifest(id));
            }
        }
        let (manifests, chunks): (Vec<ItemKey>, Vec<ItemKey>) = {
            let index = self.inner.index.lock().expect("never poisoned");
            index
                .occupied()
                .flat_map(|(_, keys)| keys.keys().copied())
                .filter(|key| key.kind != ItemKind::Name)
                .partition(|key| key.kind == ItemKind::Manifest)
        };
        for key in manifests.iter().filter(|key| self.marked_within_grace(key, now)) {
            match self.fetch_local(*key).await {
                Ok(Some(value)) => {
                    let manifest: Manifest = codec::decode(&value).expect("verified by the store");
                    referenced.extend(manifest.chunks.iter().map(|chunk| ItemKey::chunk(chunk.id)));
                }
                Ok(None) => {}
                Err(reason) => {
                    warn!(item = ?key, "collection skips its round: a manifest: {reason}");
                    return;
                }
            }
        }
        self.mark_everywhere(referenced).await;
        for key in manifests.into_iter().chain(chunks) {
            self.sweep(key, now).await;
        }
        // Every holder sweeps an item within one grace period of the others.
        let grace = self.inner.config.gc_grace;
        self.inner.collected.lock().expect("never poisoned").retain(|_, at| now.duration_since(*at) < 2 * grace);
    }

    /// Marks `keys` on all their holders, this peer included.
    pub(crate) async fn mark_everywhere(&self, keys: Vec<ItemKey>) {
        let view = self.view();
        let mut by_holder: BTreeMap<PeerKey, Vec<ItemKey>> = BTreeMap::new();
        for key in keys {
            for holder in self.holders(&view, &key) {
                by_holder.entry(holder).or_default().push(key);
            }
        }
        for (holder, keys) in by_holder {
            if holder == *self.local_peer() {
                self.mark_held(&keys);
                continue;
            }
            for keys in keys.chunks(MAX_KEYS_PER_REQUEST) {
                match self.inner.network.request(&holder, Request::Mark { keys: keys.to_vec() }).await {
                    Ok(Response::Marked) => {}
                    Ok(other) => debug!(%holder, "unexpected answer to Mark: {other:?}"),
                    Err(error) => debug!(%holder, "cannot mark: {error}"),
                }
            }
        }
    }

    /// Whether this peer collected `key` recently (so repair must not fetch it back).
    pub(crate) fn recently_collected(&self, key: &ItemKey) -> bool {
        self.inner.collected.lock().expect("never poisoned").contains_key(key)
    }

    /// Deletes `key` if nothing marked it within the grace period, checked again under the
    /// key's lock so a put that refers to it again in the meantime keeps it.
    async fn sweep(&self, key: ItemKey, now: Instant) {
        let _key = self.lock_key(&key).await;
        if self.marked_within_grace(&key, now) {
            return;
        }
        match self
            .with_store(move |store| Ok((store.get(&key).ok().flatten().map_or(0, |v| v.len()), store.delete(&key)?)))
            .await
        {
            Ok((len, _)) => {
                self.inner.index.lock().expect("never poisoned").remove(&key);
                self.inner.marks.lock().expect("never poisoned").remove(&key);
                self.inner.collected.lock().expect("never poisoned").insert(key, now);
                self.inner.counters.collected_items.fetch_add(1, Ordering::Relaxed);
                self.inner.counters.collected_bytes.fetch_add(len as u64, Ordering::Relaxed);
                info!(item = ?key, "collected: nothing refers to it");
            }
            Err(error) => debug!(item = ?key, "cannot collect: {error}"),
        }
    }
}
