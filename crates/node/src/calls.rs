//! One request to several peers, sent by a [`Strategy`]: to all at once, or to one at a
//! time with a hedge, each answer handed on as it arrives (Garage's `try_call_many` and
//! `RequestStrategy` are the model). How long each peer takes to answer a fetch is
//! recorded, so reads ask the fastest holders first and hedge one that is slow.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use shoal_core::PeerKey;
use shoal_store::Store;
use tokio::time::Instant;

use crate::tasks::Tasks;
use crate::{Network, Node};

/// How one request goes to several peers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Strategy {
    /// To every peer at once. Requests still out when the caller stops waiting go on in
    /// the background if `finish`: a write should reach every holder, not only the ones
    /// that made its consistency level.
    All { finish: bool },
    /// To one peer at a time in the order given: to the next when the last one failed, or
    /// (with `hedge_after`) has not answered within the hedge delay, which leaves both
    /// out. Requests still out when the caller stops waiting are abandoned.
    OneAtATime { hedge_after: Option<Duration> },
}

/// A request sent to several peers by a [`Strategy`]. Answers come out of
/// [`Calls::next`] in the order they arrive.
pub(crate) struct Calls<T: Send + 'static, E: Send + 'static> {
    out: FuturesUnordered<BoxFuture<'static, (PeerKey, Result<T, E>)>>,
    unsent: VecDeque<PeerKey>,
    call: Box<dyn FnMut(PeerKey) -> BoxFuture<'static, Result<T, E>> + Send>,
    strategy: Strategy,
    /// The peer last sent to while hedging, how long it is given, and when the next one
    /// is sent if it has not answered.
    hedge: Option<(PeerKey, Duration, Instant)>,
    latencies: Arc<Latencies>,
    tasks: Tasks,
}

impl<T: Send + 'static, E: Send + 'static> Calls<T, E> {
    fn new<F>(
        peers: impl IntoIterator<Item = PeerKey>,
        strategy: Strategy,
        mut call: impl FnMut(PeerKey) -> F + Send + 'static,
        latencies: Arc<Latencies>,
        tasks: Tasks,
    ) -> Self
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut calls = Calls {
            out: FuturesUnordered::new(),
            unsent: peers.into_iter().collect(),
            call: Box::new(move |peer| Box::pin(call(peer))),
            strategy,
            hedge: None,
            latencies,
            tasks,
        };
        if matches!(strategy, Strategy::All { .. }) {
            while calls.send_next() {}
        }
        calls
    }

    /// The next answer, sending to more peers as the strategy says; `None` once every peer
    /// has answered.
    pub async fn next(&mut self) -> Option<(PeerKey, Result<T, E>)> {
        loop {
            if self.out.is_empty() && !self.send_next() {
                return None;
            }
            let hedge_at = self.hedge.as_ref().map(|(_, _, at)| *at);
            tokio::select! {
                Some((peer, result)) = self.out.next() => {
                    if self.hedge.as_ref().is_some_and(|(hedged, _, _)| *hedged == peer) {
                        self.hedge = None;
                    }
                    if result.is_err() && matches!(self.strategy, Strategy::OneAtATime { .. }) {
                        self.send_next();
                    }
                    return Some((peer, result));
                }
                () = tokio::time::sleep_until(hedge_at.unwrap_or_else(Instant::now)), if hedge_at.is_some() => {
                    // At least as slow as it was waited for: the next read asks it later.
                    let (slow, waited, _) = self.hedge.take().expect("a hedge is due");
                    self.latencies.record(&slow, waited);
                    self.send_next();
                }
            }
        }
    }

    /// Every answer, once every peer has answered.
    pub async fn every_answer(mut self) -> Vec<(PeerKey, Result<T, E>)> {
        let mut answers = Vec::new();
        while let Some(answer) = self.next().await {
            answers.push(answer);
        }
        answers
    }

    /// Sends to the next unsent peer; false if none is left.
    fn send_next(&mut self) -> bool {
        let Some(peer) = self.unsent.pop_front() else { return false };
        if let Strategy::OneAtATime { hedge_after: Some(floor) } = self.strategy {
            let delay = self.latencies.hedge_delay(&peer, floor);
            self.hedge = Some((peer.clone(), delay, Instant::now() + delay));
        }
        let answer = (self.call)(peer.clone());
        self.out.push(Box::pin(async move { (peer, answer.await) }));
        true
    }
}

impl<T: Send + 'static, E: Send + 'static> Drop for Calls<T, E> {
    fn drop(&mut self) {
        if matches!(self.strategy, Strategy::All { finish: true }) && !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            self.tasks.spawn(out.for_each(|_| std::future::ready(())));
        }
    }
}

/// How long each peer took to answer a fetch, smoothed: which holder a read asks first,
/// and when it hedges. Only fetches count: a peer whose disk hangs may still answer
/// pings at once.
#[derive(Debug, Default)]
pub(crate) struct Latencies(Mutex<HashMap<PeerKey, Duration>>);

impl Latencies {
    /// Hedge a peer after this many times its usual latency, and never sooner than the
    /// strategy's floor: a peer that is merely busy is not asked twice.
    const HEDGE_FACTOR: u32 = 3;

    pub(crate) fn record(&self, peer: &PeerKey, sample: Duration) {
        let mut latencies = self.0.lock().expect("never poisoned");
        let smoothed = latencies.entry(peer.clone()).or_insert(sample);
        *smoothed = (*smoothed * 3 + sample) / 4;
    }

    fn get(&self, peer: &PeerKey) -> Option<Duration> {
        self.0.lock().expect("never poisoned").get(peer).copied()
    }

    fn hedge_delay(&self, peer: &PeerKey, floor: Duration) -> Duration {
        self.get(peer).map_or(floor, |usual| (usual * Self::HEDGE_FACTOR).max(floor))
    }

    /// Forgets the peers not in `peers`.
    pub fn retain(&self, peers: &[PeerKey]) {
        self.0.lock().expect("never poisoned").retain(|peer, _| peers.contains(peer));
    }
}

impl<S: Store, N: Network> Node<S, N> {
    /// One request to each of `peers`, made by `call` and sent by `strategy`.
    pub(crate) fn calls<T, E, F>(
        &self,
        peers: impl IntoIterator<Item = PeerKey>,
        strategy: Strategy,
        call: impl FnMut(PeerKey) -> F + Send + 'static,
    ) -> Calls<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<T, E>> + Send + 'static,
    {
        Calls::new(peers, strategy, call, Arc::clone(&self.inner.latencies), self.inner.tasks.clone())
    }

    /// `peers`, this one first, then the fastest to answer. A peer not measured yet
    /// counts as fast: asking it measures it.
    pub(crate) fn by_latency(&self, mut peers: Vec<PeerKey>) -> Vec<PeerKey> {
        let me = self.local_peer();
        peers.sort_by_key(|peer| (peer != me, self.inner.latencies.get(peer).unwrap_or_default()));
        peers
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn peers(count: u8) -> Vec<PeerKey> {
        (0..count).map(|i| PeerKey::from_bytes(&[i])).collect()
    }

    /// Requests sent and answered.
    #[derive(Default)]
    struct Counts {
        sent: AtomicUsize,
        answered: AtomicUsize,
    }

    /// Peer `i` answers after `delays[i]` ms (never, if `None`), with its index.
    fn calls(
        strategy: Strategy,
        delays: &[Option<u64>],
        counts: Arc<Counts>,
        tasks: &Tasks,
    ) -> (Calls<usize, ()>, Arc<Latencies>) {
        let all = peers(delays.len() as u8);
        let delays: HashMap<PeerKey, (usize, Option<u64>)> =
            all.iter().cloned().zip(delays.iter().copied().enumerate()).collect();
        let latencies = Arc::new(Latencies::default());
        let call = move |peer: PeerKey| {
            counts.sent.fetch_add(1, Ordering::SeqCst);
            let ((index, delay), counts) = (delays[&peer], counts.clone());
            async move {
                match delay {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => std::future::pending().await,
                }
                counts.answered.fetch_add(1, Ordering::SeqCst);
                Ok(index)
            }
        };
        (Calls::new(all, strategy, call, latencies.clone(), tasks.clone()), latencies)
    }

    #[tokio::test(start_paused = true)]
    async fn all_at_once_hands_answers_on_as_they_come_and_finishes_the_rest_if_asked() {
        for finish in [false, true] {
            let (tasks, counts) = (Tasks::default(), Arc::new(Counts::default()));
            let (mut calls, _) =
                calls(Strategy::All { finish }, &[Some(30), Some(10), Some(20)], counts.clone(), &tasks);
            assert_eq!(counts.sent.load(Ordering::SeqCst), 3, "every request is sent at once");
            assert_eq!(calls.next().await.map(|(_, answer)| answer), Some(Ok(1)));
            drop(calls);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answered = counts.answered.load(Ordering::SeqCst);
            assert_eq!(answered, if finish { 3 } else { 1 }, "finish: {finish}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_at_a_time_hedges_a_silent_peer_and_remembers_it() {
        let (tasks, counts) = (Tasks::default(), Arc::new(Counts::default()));
        let hedge_after = Duration::from_millis(200);
        let strategy = Strategy::OneAtATime { hedge_after: Some(hedge_after) };
        let (mut calls, latencies) = calls(strategy, &[None, Some(5), Some(5)], counts.clone(), &tasks);
        let started = tokio::time::Instant::now();
        assert_eq!(calls.next().await.map(|(_, answer)| answer), Some(Ok(1)));
        assert_eq!(started.elapsed(), hedge_after + Duration::from_millis(5));
        assert_eq!(counts.sent.load(Ordering::SeqCst), 2, "the third peer was never needed");
        assert_eq!(latencies.get(&peers(1)[0]), Some(hedge_after), "the silent peer is remembered as slow");
    }

    #[tokio::test(start_paused = true)]
    async fn one_at_a_time_without_a_hedge_waits_for_each_answer_before_the_next() {
        let (tasks, counts) = (Tasks::default(), Arc::new(Counts::default()));
        let strategy = Strategy::OneAtATime { hedge_after: None };
        let (mut calls, _) = calls(strategy, &[Some(1000), Some(5)], counts.clone(), &tasks);
        assert_eq!(calls.next().await.map(|(_, answer)| answer), Some(Ok(0)));
        assert_eq!(counts.sent.load(Ordering::SeqCst), 1);
        assert_eq!(calls.next().await.map(|(_, answer)| answer), Some(Ok(1)), "asked for more, it sends to the next");
        assert!(calls.next().await.is_none());
    }
}
