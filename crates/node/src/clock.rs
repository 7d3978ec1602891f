//! The wall clock that versions, upload leases and reference deaths are read from.
//!
//! Node tests run under tokio's paused time, which the system clock does not follow; there
//! the wall clock is tokio's clock, anchored once per process, so that advancing time in a
//! test moves leases and grace periods as it moves timers.
//!
//! Versions of name records are only as good as the clocks they are read from, so every
//! repair round also measures the clock of every counted peer (status and metrics show
//! them), and a peer whose clock most of the others find too far off stops coordinating
//! writes until it is fixed (CockroachDB's `max-offset` rule).

use std::collections::BTreeMap;
use std::sync::Mutex;

use shoal_core::PeerKey;
use shoal_core::names::MAX_CLOCK_OFFSET_MS;

/// Milliseconds since the Unix epoch.
#[cfg(not(test))]
pub(crate) fn wall_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds since the Unix epoch, as far as tokio's (possibly paused) clock has moved
/// since the first call in this process.
#[cfg(test)]
pub(crate) fn wall_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};
    static ANCHOR: OnceLock<(std::time::Instant, u64)> = OnceLock::new();
    let (instant, wall) = *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        (tokio::time::Instant::now().into_std(), wall)
    });
    wall + tokio::time::Instant::now().into_std().saturating_duration_since(instant).as_millis() as u64
}

/// How far another peer's clock is from this one's: what it answered a ping with, minus
/// this clock at the ping's midpoint. Off by at most half the round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerClock {
    pub offset_ms: i64,
    pub round_trip_ms: u64,
}

impl PeerClock {
    /// From a ping sent at `sent_ms` (this clock) that took `round_trip_ms` and was
    /// answered with `theirs_ms`.
    pub fn measured(sent_ms: u64, round_trip_ms: u64, theirs_ms: u64) -> Self {
        let midpoint = i128::from(sent_ms) + i128::from(round_trip_ms / 2);
        let offset = (i128::from(theirs_ms) - midpoint).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        Self { offset_ms: offset as i64, round_trip_ms }
    }
}

/// The last clock measured of every counted peer.
#[derive(Debug, Default)]
pub(crate) struct PeerClocks(Mutex<BTreeMap<PeerKey, PeerClock>>);

/// How far apart two clocks may be before the one that most peers disagree with stops
/// writing versions: half of what a holder accepts ahead of its own clock
/// ([`MAX_CLOCK_OFFSET_MS`]), so a version written by a peer within this bound is never
/// refused, and one written ahead of the others never waits past that bound to win.
pub const CLOCK_OFFSET_LIMIT_MS: u64 = MAX_CLOCK_OFFSET_MS / 2;

impl PeerClocks {
    pub fn record(&self, peer: PeerKey, clock: PeerClock) {
        self.0.lock().expect("never poisoned").insert(peer, clock);
    }

    /// Forgets the peers not in `view` (sorted).
    pub fn retain(&self, view: &[PeerKey]) {
        self.0.lock().expect("never poisoned").retain(|peer, _| view.binary_search(peer).is_ok());
    }

    pub fn snapshot(&self) -> Vec<(PeerKey, PeerClock)> {
        self.0.lock().expect("never poisoned").iter().map(|(peer, clock)| (peer.clone(), *clock)).collect()
    }

    /// When most measured peers find this clock further off than
    /// [`CLOCK_OFFSET_LIMIT_MS`], the median of their offsets (theirs minus ours): this
    /// clock, not theirs, is the one that is wrong.
    pub fn off_by(&self) -> Option<i64> {
        let clocks = self.0.lock().expect("never poisoned");
        let far = clocks.values().filter(|clock| clock.offset_ms.unsigned_abs() > CLOCK_OFFSET_LIMIT_MS).count();
        if far * 2 <= clocks.len() {
            return None;
        }
        let mut offsets: Vec<i64> = clocks.values().map(|clock| clock.offset_ms).collect();
        offsets.sort_unstable();
        Some(offsets[offsets.len() / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_read_at_the_pings_midpoint() {
        assert_eq!(PeerClock::measured(1_000, 40, 5_020), PeerClock { offset_ms: 4_000, round_trip_ms: 40 });
        assert_eq!(PeerClock::measured(1_000, 0, 0).offset_ms, -1_000);
        assert_eq!(PeerClock::measured(0, 0, u64::MAX).offset_ms, i64::MAX, "saturates");
    }

    #[test]
    fn a_clock_is_off_only_when_most_peers_say_so() {
        let clocks = PeerClocks::default();
        let far = -i64::try_from(CLOCK_OFFSET_LIMIT_MS).unwrap() - 1;
        for (n, offset_ms) in [far, far - 10, 0].into_iter().enumerate() {
            clocks.record(PeerKey::from_bytes(&[n as u8]), PeerClock { offset_ms, round_trip_ms: 0 });
        }
        assert_eq!(clocks.off_by(), Some(far), "two of three far: the median");
        clocks.record(PeerKey::from_bytes(&[3]), PeerClock { offset_ms: 5, round_trip_ms: 0 });
        assert_eq!(clocks.off_by(), None, "two of four is no majority");
        clocks.retain(&[PeerKey::from_bytes(&[3])]);
        assert_eq!(clocks.off_by(), None);
    }
}
