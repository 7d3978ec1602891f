//! How many peers of one subnet may hold data, in an open network. Peer ids cost
//! nothing, so whoever wants the items of one key can make ids close to it and connect
//! them all (an eclipse): they would be the key's R holders. Addresses cost more: with
//! at most R-1 peers of one /24 (IPv4) or /48 (IPv6) admitted, every key keeps a holder
//! outside the attacker's subnet. Peers over the bound are served lookups only, as
//! peers of other settings are. Loopback and private addresses are the operator's own
//! network and count only when asked to.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The bound (see the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetLimit {
    /// Most peers of one subnet that hold data.
    pub per_subnet: usize,
    /// Whether loopback, private, link-local and shared (CGNAT) addresses count too.
    pub count_private: bool,
}

/// A /24 of IPv4 or a /48 of IPv6: what one operator can cheaply fill with peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Subnet {
    V4([u8; 3]),
    V6([u16; 3]),
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subnet::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Subnet::V6([a, b, c]) => write!(f, "{a:x}:{b:x}:{c:x}::/48"),
        }
    }
}

/// The subnet an address counts in under `limit`, or `None` if it counts in none.
pub(crate) fn subnet_of(addr: &Multiaddr, limit: &SubnetLimit) -> Option<Subnet> {
    let ip = addr.iter().find_map(|part| match part {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    if !limit.count_private && is_own_network(&ip) {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Subnet::V4([a, b, c])
        }
        IpAddr::V6(v6) => {
            let [a, b, c, ..] = v6.segments();
            Subnet::V6([a, b, c])
        }
    })
}

/// Addresses that only the operator's own machines or network can have.
fn is_own_network(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = Ipv4Addr::new(100, 64, 0, 0).to_bits() == v4.to_bits() & 0xffc0_0000;
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || shared
        }
        IpAddr::V6(v6) => {
            let segment = v6.segments()[0];
            let unique_local = segment & 0xfe00 == 0xfc00;
            let link_local = segment & 0xffc0 == 0xfe80;
            v6.is_loopback() || v6.is_unspecified() || unique_local || link_local
        }
    }
}

/// The peers admitted per subnet.
#[derive(Debug, Default)]
pub(crate) struct Subnets {
    limit: Option<SubnetLimit>,
    members: HashMap<Subnet, HashSet<PeerId>>,
    of_peer: HashMap<PeerId, Subnet>,
}

impl Subnets {
    pub fn new(limit: Option<SubnetLimit>) -> Self {
        Self { limit, ..Self::default() }
    }

    /// Admits `peer`, reached at `addr`, unless its subnet is full: then the subnet.
    pub fn admit(&mut self, peer: PeerId, addr: &Multiaddr) -> Result<(), Subnet> {
        let Some(limit) = self.limit else { return Ok(()) };
        let Some(subnet) = subnet_of(addr, &limit) else { return Ok(()) };
        if self.of_peer.get(&peer).is_some_and(|known| *known != subnet) {
            self.release(&peer);
        }
        let members = self.members.entry(subnet).or_default();
        if !members.contains(&peer) && members.len() >= limit.per_subnet {
            return Err(subnet);
        }
        members.insert(peer);
        self.of_peer.insert(peer, subnet);
        Ok(())
    }

    /// Whether `peer`, found at `addrs` by a lookup, would be admitted at whichever of
    /// them it is dialed, counting the peers of the same lookup let through before it
    /// (`taken`): none of its subnets is full.
    pub fn would_admit(&self, peer: &PeerId, addrs: &[Multiaddr], taken: &mut HashMap<Subnet, usize>) -> bool {
        let Some(limit) = self.limit else { return true };
        let subnets: Vec<Subnet> = addrs.iter().filter_map(|addr| subnet_of(addr, &limit)).collect();
        let room = |subnet: &Subnet| {
            let members = self.members.get(subnet);
            members.is_some_and(|members| members.contains(peer))
                || members.map_or(0, HashSet::len) + taken.get(subnet).copied().unwrap_or(0) < limit.per_subnet
        };
        if !subnets.iter().all(room) {
            return false;
        }
        for subnet in subnets {
            if !self.members.get(&subnet).is_some_and(|members| members.contains(peer)) {
                *taken.entry(subnet).or_default() += 1;
            }
        }
        true
    }

    /// `peer` left: its place in its subnet is free again.
    pub fn release(&mut self, peer: &PeerId) {
        if let Some(subnet) = self.of_peer.remove(peer)
            && let Some(members) = self.members.get_mut(&subnet)
        {
            members.remove(peer);
            if members.is_empty() {
                self.members.remove(&subnet);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_ONLY: SubnetLimit = SubnetLimit { per_subnet: 2, count_private: false };

    fn addr(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_count_in_their_slash_24_or_slash_48() {
        let subnet = |text: &str| subnet_of(&addr(text), &PUBLIC_ONLY).map(|s| s.to_string());
        assert_eq!(subnet("/ip4/203.0.113.7/tcp/4001").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(subnet("/ip6/2001:db8:1:2::7/tcp/4001").as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(subnet("/ip6/::ffff:203.0.113.9/tcp/1").as_deref(), Some("203.0.113.0/24"));
        for own in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/169.254.0.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
        ] {
            assert_eq!(subnet(own), None, "{own}");
        }
        let all = SubnetLimit { count_private: true, ..PUBLIC_ONLY };
        assert_eq!(
            subnet_of(&addr("/ip4/127.0.9.1/tcp/1"), &all).map(|s| s.to_string()).as_deref(),
            Some("127.0.9.0/24")
        );
    }

    #[test]
    fn a_full_subnet_admits_no_one_until_a_member_leaves() {
        let mut subnets = Subnets::new(Some(PUBLIC_ONLY));
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let same = addr("/ip4/203.0.113.1/tcp/1");
        assert_eq!(subnets.admit(peers[0], &same), Ok(()));
        assert_eq!(subnets.admit(peers[1], &addr("/ip4/203.0.113.200/tcp/9")), Ok(()));
        assert!(subnets.admit(peers[2], &same).is_err());
        assert_eq!(subnets.admit(peers[0], &same), Ok(()), "a member is admitted again");
        let mut taken = HashMap::new();
        assert!(!subnets.would_admit(&peers[2], std::slice::from_ref(&same), &mut taken));
        assert!(subnets.would_admit(&peers[0], std::slice::from_ref(&same), &mut taken));
        // Found together, two strangers of an empty subnet fill it, and a third stays out.
        let other = addr("/ip4/192.0.2.1/tcp/1");
        let strangers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let admitted: Vec<bool> =
            strangers.iter().map(|p| subnets.would_admit(p, std::slice::from_ref(&other), &mut taken)).collect();
        assert_eq!(admitted, [true, true, false]);
        assert_eq!(subnets.admit(peers[2], &addr("/ip4/198.51.100.1/tcp/1")), Ok(()), "another subnet");
        subnets.release(&peers[2]);
        subnets.release(&peers[0]);
        assert_eq!(subnets.admit(peers[2], &same), Ok(()));
        assert_eq!(Subnets::new(None).admit(peers[0], &same), Ok(()), "no limit");
    }
}
