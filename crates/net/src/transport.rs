//! How one connection is made: TCP, then in a private network pnet's encryption with
//! the network key, then noise (who the peer is) and yamux (streams).
//!
//! pnet comes first because it must: it runs below noise and multistream, so a peer
//! without the key cannot get as far as naming a protocol. libp2p's pnet works on byte
//! streams only, which is one reason Shoal builds no QUIC transport: QUIC brings its own
//! TLS handshake, which no pre-shared key could guard.

use std::time::Duration;

use either::Either::Left;
use futures::future::Either;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::transport::timeout::{TransportTimeout, TransportTimeoutError};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PnetError};
use libp2p::{PeerId, Transport, noise, tcp, yamux};

use crate::NetworkKey;

/// How long a TCP connection may take to come up, and the whole connection with its
/// handshake. A connection that runs out of time after TCP was up failed in its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection failed: before TCP was up (nothing to do with network keys), or in
/// the handshake after it, by an error or a stall. The handshake is what a peer without
/// the network key, or with another, fails: pnet cannot tell a wrong key from garbage,
/// and what noise or multistream make of garbage may be an error or a wait for bytes
/// that never come.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("cannot connect: {0}")]
    Connect(TransportTimeoutError<std::io::Error>),
    #[error("handshake failed: {0}")]
    Handshake(String),
}

pub(crate) fn build(
    keypair: &Keypair,
    key: Option<NetworkKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let noise = noise::Config::new(keypair)?;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let transport = TransportTimeout::with_outgoing_timeout(tcp, CONNECT_TIMEOUT)
        .and_then(move |socket, _| async move {
            match key {
                Some(NetworkKey(key)) => PnetConfig::new(key).handshake(socket).await.map(Either::Left),
                None => Ok::<_, PnetError>(Either::Right(socket)),
            }
        })
        .upgrade(Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(CONNECTION_TIMEOUT)
        // Each layer wraps the errors below it in the `Left` of an `Either`: TCP's own
        // errors are at the bottom, everything else happened after TCP was up.
        .map_err(|error| match error {
            TransportTimeoutError::Other(Left(Left(Left(connect)))) => ConnectionError::Connect(connect),
            handshake => ConnectionError::Handshake(handshake.to_string()),
        })
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed();
    Ok(transport)
}

/// Whether `error`, as the swarm reports it, is a [`ConnectionError::Handshake`].
pub(crate) fn is_handshake_failure(error: &std::io::Error) -> bool {
    let cause = error.get_ref().and_then(|inner| inner.downcast_ref());
    matches!(cause, Some(ConnectionError::Handshake(_)))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
    use libp2p::core::{Endpoint, Multiaddr};

    use super::*;

    fn dial(
        transport: &mut Boxed<(PeerId, StreamMuxerBox)>,
        addr: Multiaddr,
    ) -> impl Future<Output = std::io::Error> + use<> {
        let dial = transport.dial(addr, DialOpts { role: Endpoint::Dialer, port_use: PortUse::New }).unwrap();
        async move { dial.await.map(|(peer, _)| peer).expect_err("the connection fails") }
    }

    /// A listener whose side of every connection is driven in the background.
    async fn listener(key: Option<NetworkKey>) -> Multiaddr {
        let mut transport = build(&Keypair::generate_ed25519(), key).unwrap();
        transport.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let Some(TransportEvent::NewAddress { listen_addr, .. }) = transport.next().await else { panic!("no address") };
        tokio::spawn(async move {
            while let Some(event) = transport.next().await {
                if let TransportEvent::Incoming { upgrade, .. } = event {
                    tokio::spawn(upgrade);
                }
            }
        });
        listen_addr
    }

    #[tokio::test]
    async fn a_missing_or_other_key_fails_the_handshake_and_a_closed_port_does_not() {
        let ours = NetworkKey::generate().unwrap();
        let theirs = NetworkKey::generate().unwrap();
        let private = listener(Some(ours)).await;
        let open = listener(None).await;
        // A stall takes the whole connection deadline: the three run at once.
        let failures = [(None, &private), (Some(theirs), &private), (Some(ours), &open)].map(|(key, addr)| {
            let mut dialer = build(&Keypair::generate_ed25519(), key).unwrap();
            dial(&mut dialer, addr.clone())
        });
        for error in futures::future::join_all(failures).await {
            assert!(is_handshake_failure(&error), "{error:?}");
        }

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut dialer = build(&Keypair::generate_ed25519(), Some(ours)).unwrap();
        let error = dial(&mut dialer, format!("/ip4/127.0.0.1/tcp/{closed}").parse().unwrap()).await;
        assert!(!is_handshake_failure(&error), "{error:?}");
    }
}
