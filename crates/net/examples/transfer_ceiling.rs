//! The ceiling for Shoal's transport: one raw yamux stream over TCP + noise, the stack
//! Shoal's peers speak, carrying `SIZE_MIB` bytes from one process's dialer to its
//! listener, with the receiver hashing everything with BLAKE3 as Shoal does.
//!
//! `cargo run --release -p shoal-net --example transfer_ceiling [SIZE_MIB]` (default 1024)
//! prints the throughput in MiB/s.
#![allow(clippy::print_stdout, reason = "a bench prints its figure")]

use std::time::Instant;

use futures::future::poll_fn;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt};
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, PortUse, TransportEvent};
use libp2p::core::{Endpoint, Transport, upgrade};
use libp2p::{PeerId, identity, noise, tcp, yamux};

fn transport() -> Boxed<(PeerId, StreamMuxerBox)> {
    let keypair = identity::Keypair::generate_ed25519();
    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
        .upgrade(upgrade::Version::V1)
        .authenticate(noise::Config::new(&keypair).expect("noise keys"))
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}

/// Polls a connection for as long as it lives: yamux moves data only while polled.
fn drive(mut muxer: StreamMuxerBox) {
    tokio::spawn(poll_fn(move |cx| {
        loop {
            match muxer.poll_unpin(cx) {
                std::task::Poll::Ready(Ok(_)) => continue,
                std::task::Poll::Ready(Err(_)) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }));
}

#[tokio::main]
async fn main() {
    let size_mib: usize = std::env::args().nth(1).map_or(1024, |a| a.parse().expect("size in MiB"));
    let bytes = size_mib << 20;

    let mut listener = transport();
    listener.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let Some(TransportEvent::NewAddress { listen_addr, .. }) = listener.next().await {
            break listen_addr;
        }
    };
    let receiver = tokio::spawn(async move {
        let upgrade = loop {
            if let Some(TransportEvent::Incoming { upgrade, .. }) = listener.next().await {
                break upgrade;
            }
        };
        let (_, mut muxer) = upgrade.await.expect("inbound upgrade");
        let mut stream = poll_fn(|cx| muxer.poll_inbound_unpin(cx)).await.expect("inbound stream");
        drive(muxer);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut received = 0;
        loop {
            let read = stream.read(&mut buf).await.expect("read");
            if read == 0 {
                break;
            }
            hasher.update(&buf[..read]);
            received += read;
        }
        (received, hasher.finalize())
    });

    let started = Instant::now();
    let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::New };
    let (_, mut muxer) = transport().dial(addr, opts).expect("dial").await.expect("connect");
    let mut stream = poll_fn(|cx| muxer.poll_outbound_unpin(cx)).await.expect("outbound stream");
    drive(muxer);
    let block = vec![7u8; 256 << 10];
    for _ in 0..bytes / block.len() {
        stream.write_all(&block).await.expect("write");
    }
    stream.close().await.expect("close");
    let (received, _) = receiver.await.expect("receiver");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(received, bytes);
    println!("{:.1}", size_mib as f64 / seconds);
}
