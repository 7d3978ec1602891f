//! Which peers count: failure detection with a grace period.
//!
//! A peer is *up* from the moment the network reports a compatible connection, and stays
//! a holder for `failure_grace` after its last connection closed, so a restart or a
//! short blip does not move data around. Past the grace period it is dead: it no longer
//! counts as a holder and repair restores R copies elsewhere. A dead peer that comes back
//! (same identity) is up again and gets its items handed back.
//!
//! Each counted peer has an *arrival*: the time since which it holds what it should, as
//! far as this peer can tell. That is when its store was created (it announces it), or,
//! for a peer that was forgotten and came back, the moment it came back: what was written
//! meanwhile went to others. The policy uses arrivals to find the holders a peer displaced.

use std::collections::HashMap;
use std::time::Duration;

use shoal_core::PeerKey;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Up,
    Down { since: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Counted {
    state: PeerState,
    arrived_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Membership {
    grace: Duration,
    peers: HashMap<PeerKey, Counted>,
    /// Peers forgotten after their grace period, and when; kept for `remember_departed`
    /// (a peer away longer must be wiped before it rejoins anyway).
    departed: HashMap<PeerKey, Instant>,
    remember_departed: Duration,
}

impl Membership {
    pub fn new(grace: Duration, remember_departed: Duration) -> Self {
        Self { grace, peers: HashMap::new(), departed: HashMap::new(), remember_departed }
    }

    /// `peer` is connected; it announced holding copies since `holding_since_ms`, and
    /// `now` / `now_ms` are the clocks. Returns true when the set of counted peers changed.
    /// A peer back after its grace period ran out arrives now, even if no round forgot
    /// it meanwhile; an announcement from the future counts as now.
    pub fn up(&mut self, peer: PeerKey, holding_since_ms: u64, now: Instant, now_ms: u64) -> bool {
        let holding_since_ms = holding_since_ms.min(now_ms);
        let grace = self.grace;
        match self.peers.get_mut(&peer) {
            Some(counted) if !past_grace(grace, counted, now) => {
                counted.state = PeerState::Up;
                return false;
            }
            Some(_) => {
                self.peers.remove(&peer);
                self.departed.insert(peer.clone(), now);
            }
            None => {}
        }
        let arrived_ms = if self.departed.remove(&peer).is_some() { now_ms } else { holding_since_ms };
        self.peers.insert(peer, Counted { state: PeerState::Up, arrived_ms });
        true
    }

    pub fn down(&mut self, peer: &PeerKey, now: Instant) {
        if let Some(counted) = self.peers.get_mut(peer).filter(|counted| counted.state == PeerState::Up) {
            counted.state = PeerState::Down { since: now };
        }
    }

    /// Forgets peers down for longer than the grace period; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let grace = self.grace;
        let expired: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(
                |(_, counted)| matches!(counted.state, PeerState::Down { since } if now.duration_since(since) >= grace),
            )
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in &expired {
            self.peers.remove(peer);
            self.departed.insert(peer.clone(), now);
        }
        let remember = self.remember_departed;
        self.departed.retain(|_, since| now.duration_since(*since) < remember);
        !expired.is_empty()
    }

    /// Peers that count as holders (up, or down for less than the grace period), sorted,
    /// each with its arrival.
    pub fn counted(&self) -> Vec<(PeerKey, u64)> {
        let mut peers: Vec<(PeerKey, u64)> =
            self.peers.iter().map(|(peer, counted)| (peer.clone(), counted.arrived_ms)).collect();
        peers.sort();
        peers
    }

    /// Peers forgotten after their grace period and still remembered.
    pub fn departed(&self) -> Vec<PeerKey> {
        self.departed.keys().cloned().collect()
    }

    /// When the next down peer's grace period ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|counted| match counted.state {
                PeerState::Down { since } => Some(since + self.grace),
                PeerState::Up => None,
            })
            .min()
    }
}

/// Whether `counted` has been down for its whole grace period.
fn past_grace(grace: Duration, counted: &Counted, now: Instant) -> bool {
    matches!(counted.state, PeerState::Down { since } if now.duration_since(since) >= grace)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREVER: Duration = Duration::from_secs(7 * 24 * 3600);

    fn peers(membership: &Membership) -> Vec<PeerKey> {
        membership.counted().into_iter().map(|(peer, _)| peer).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_counts_until_its_grace_period_ends() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10), FOREVER);
        assert!(membership.up(peer.clone(), 5, Instant::now(), 100));
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!membership.expire(Instant::now()));
        assert_eq!(membership.counted(), vec![(peer.clone(), 5)]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(membership.expire(Instant::now()));
        assert!(membership.counted().is_empty());
        assert!(membership.up(peer.clone(), 5, Instant::now(), 200), "a returning peer counts again");
        assert_eq!(membership.counted(), vec![(peer, 200)], "and arrives when it came back");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnecting_within_grace_keeps_the_peer() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10), FOREVER);
        membership.up(peer.clone(), 5, Instant::now(), 100);
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!membership.up(peer.clone(), 5, Instant::now(), 150), "no change: it never stopped counting");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!membership.expire(Instant::now()));
        assert_eq!(peers(&membership), vec![peer.clone()]);
        assert_eq!(membership.counted(), vec![(peer, 5)], "its arrival is what it announced");
    }

    #[tokio::test(start_paused = true)]
    async fn departures_are_remembered_for_a_while() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10), Duration::from_secs(100));
        membership.up(peer.clone(), 5, Instant::now(), 100);
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(110)).await;
        assert!(membership.expire(Instant::now()));
        tokio::time::advance(Duration::from_secs(100)).await;
        membership.expire(Instant::now());
        membership.up(peer.clone(), 5, Instant::now(), 300);
        assert_eq!(membership.counted(), vec![(peer, 5)], "forgotten past remember_departed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_back_after_its_grace_arrives_anew_even_unexpired() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10), FOREVER);
        membership.up(peer.clone(), 5, Instant::now(), 100);
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(membership.up(peer.clone(), 5, Instant::now(), 200), "its grace ran out: it left and came back");
        assert_eq!(membership.counted(), vec![(peer.clone(), 200)]);
        let hostile = PeerKey::from_bytes(b"b");
        membership.up(hostile.clone(), u64::MAX, Instant::now(), 300);
        assert!(membership.counted().contains(&(hostile, 300)), "an arrival from the future is now");
    }
}
