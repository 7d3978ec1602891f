//! Answering other peers: the requests of the transfer protocol, their limits, and how
//! many are answered at once.

use std::sync::Arc;

use shoal_core::PeerKey;
use shoal_core::digest::TreeNode;
use shoal_core::wire::{Request, Response, STORE_BATCH_MAX};
use shoal_store::Store;
use tracing::warn;

use crate::{Network, Node};

/// Most tree nodes one `Digests` request may name.
pub(crate) const MAX_NODES_PER_REQUEST: usize = 4096;
/// Most buckets one `BucketKeys` request may name: at a million keys per peer (15 a
/// bucket) the answer stays near 200 KiB, far under the frame limit.
pub(crate) const MAX_BUCKETS_PER_KEYS_REQUEST: usize = 256;
/// Most keys one request names.
pub(crate) const MAX_KEYS_PER_REQUEST: usize = 16384;
/// Most keys one `Prove` request may name: each is read and verified before it is
/// proved, so this bounds what one answer reads (256 MiB of chunks).
pub(crate) const MAX_KEYS_PER_PROOF: usize = 256;

/// Requests from other peers answered at once; more wait in the network's bounded queue,
/// which refuses past it.
pub(crate) const ANSWERS_IN_FLIGHT: usize = 64;

impl<S: Store, N: Network> Node<S, N> {
    /// Answers `request` from `from` in the background and hands the answer to `reply`.
    /// Waits first while [`ANSWERS_IN_FLIGHT`] are being answered, so that a flood backs
    /// up into the caller's queue, not into memory.
    pub async fn answer(&self, from: PeerKey, request: Request, reply: impl FnOnce(Response) + Send + 'static) {
        let slot = Arc::clone(&self.inner.answer_slots).acquire_owned().await.expect("never closed");
        let node = self.clone();
        self.inner.tasks.spawn(async move {
            reply(node.handle_request(&from, request).await);
            drop(slot);
        });
    }

    /// Answers a transfer request from another peer.
    pub async fn handle_request(&self, from: &PeerKey, request: Request) -> Response {
        match request {
            Request::Store { .. } if !request.is_valid_store() => {
                Response::Failed(format!("a store batch must hold 1 to {STORE_BATCH_MAX} items of one id"))
            }
            Request::Store { items } => match self.store_local(items).await {
                Ok(newer) => Response::Stored { newer },
                Err(error) => {
                    // The error names the item at fault.
                    warn!(peer = ?from, "refused a store: {error}");
                    Response::Failed(error.to_string())
                }
            },
            Request::Fetch { key } if self.challenging(&key) => {
                Response::Failed("being handed off to its holders right now: ask them".into())
            }
            Request::Fetch { key } => match self.fetch_local(key).await {
                Ok(item) => Response::Item(item),
                Err(reason) => Response::Failed(reason),
            },
            Request::Ping => Response::Pong { wall_ms: self.now_ms() },
            Request::Digests { nodes } => {
                if nodes.len() > MAX_NODES_PER_REQUEST || !TreeNode::is_frontier(&nodes) {
                    return Response::Failed("malformed digest request".into());
                }
                let node = self.clone();
                let from = from.clone();
                // Fingerprinting walks every occupied bucket: keep it off the async workers.
                tokio::task::spawn_blocking(move || Response::Digests(node.digests(&node.layout(), &from, &nodes)))
                    .await
                    .expect("digests do not panic")
            }
            Request::BucketKeys { buckets } if buckets.len() <= MAX_BUCKETS_PER_KEYS_REQUEST => {
                Response::Keys(self.bucket_keys(&buckets))
            }
            Request::Prove { nonce, keys } if keys.len() <= MAX_KEYS_PER_PROOF => {
                Response::Proofs(self.prove(&nonce, keys).await)
            }
            Request::Holding { key } => Response::Item(self.holding(key).await),
            Request::ListNames { prefix, after, limit } => {
                match self.local_names(&prefix, after.as_deref(), limit as usize).await {
                    Ok((records, more)) => Response::Names { records, more },
                    Err(reason) => Response::Failed(reason),
                }
            }
            Request::Refer { sets } if sets.len() <= MAX_KEYS_PER_REQUEST => match self.refer_local(sets).await {
                Ok(without_chunk) => Response::Referred { without_chunk },
                Err(error) => {
                    warn!(peer = ?from, "refused references: {error}");
                    Response::Failed(error.to_string())
                }
            },
            Request::Refer { .. } => Response::Failed("too many references sent".into()),
            Request::BucketKeys { .. } | Request::Prove { .. } => Response::Failed("too many keys asked".into()),
        }
    }
}
