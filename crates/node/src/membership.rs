//! Which peers count: failure detection with a grace period.
//!
//! A peer is *up* from the moment the network reports a compatible connection, and stays
//! a holder for `failure_grace` after its last connection closed, so a restart or a
//! short blip does not move data around. Past the grace period it is dead: it no longer
//! counts as a holder and repair restores R copies elsewhere. A dead peer that comes back
//! (same identity) is up again and gets its items handed back.

use std::collections::HashMap;
use std::time::Duration;

use shoal_core::PeerKey;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Up,
    Down { since: Instant },
}

#[derive(Debug)]
pub(crate) struct Membership {
    grace: Duration,
    peers: HashMap<PeerKey, PeerState>,
}

impl Membership {
    pub fn new(grace: Duration) -> Self {
        Self { grace, peers: HashMap::new() }
    }

    /// Returns true when the set of counted peers changed.
    pub fn up(&mut self, peer: PeerKey) -> bool {
        self.peers.insert(peer, PeerState::Up).is_none()
    }

    pub fn down(&mut self, peer: &PeerKey, now: Instant) {
        if let Some(state @ PeerState::Up) = self.peers.get_mut(peer) {
            *state = PeerState::Down { since: now };
        }
    }

    /// Forgets peers down for longer than the grace period; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let before = self.peers.len();
        let grace = self.grace;
        self.peers.retain(|_, state| match state {
            PeerState::Up => true,
            PeerState::Down { since } => now.duration_since(*since) < grace,
        });
        self.peers.len() != before
    }

    /// Peers that count as holders: up, or down for less than the grace period.
    pub fn counted(&self) -> Vec<PeerKey> {
        let mut peers: Vec<PeerKey> = self.peers.keys().cloned().collect();
        peers.sort();
        peers
    }

    /// When the next down peer's grace period ends.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|state| match state {
                PeerState::Down { since } => Some(*since + self.grace),
                PeerState::Up => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_counts_until_its_grace_period_ends() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10));
        assert!(membership.up(peer.clone()));
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!membership.expire(Instant::now()));
        assert_eq!(membership.counted(), vec![peer.clone()]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(membership.expire(Instant::now()));
        assert!(membership.counted().is_empty());
        assert!(membership.up(peer.clone()), "a returning peer counts again");
    }

    #[tokio::test(start_paused = true)]
    async fn reconnecting_within_grace_keeps_the_peer() {
        let peer = PeerKey::from_bytes(b"a");
        let mut membership = Membership::new(Duration::from_secs(10));
        membership.up(peer.clone());
        membership.down(&peer, Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!membership.up(peer.clone()), "no change: it never stopped counting");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!membership.expire(Instant::now()));
        assert_eq!(membership.counted(), vec![peer]);
    }
}
