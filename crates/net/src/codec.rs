//! Framing of the transfer protocol: a 4-byte big-endian length, then one message
//! encoded by `shoal_core::codec` with its item values left empty, then each value (see
//! [`Payloads`]) as a 4-byte length and its raw bytes. Values skip the encoder both ways:
//! a chunk is written from the `Bytes` it arrived in and read into the buffer it is kept
//! in. Lengths over what is left of the message limit are refused before any
//! allocation, so a peer cannot make us buffer more than one bounded message per stream,
//! and the bytes of inbound requests together stay within a [`Budget`].

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use shoal_core::codec::{self, MAX_MESSAGE_BYTES};
use shoal_core::wire::{Payloads, Request, Response, STORE_BATCH_MAX};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Values up to this size are copied into the frame's head: one write instead of two.
const INLINE_VALUE_MAX: usize = 16 << 10;

#[derive(Debug, Clone)]
pub struct TransferCodec {
    inbound: Budget,
}

impl TransferCodec {
    /// A codec whose inbound requests hold at most `inbound_bytes` at once.
    pub fn new(inbound_bytes: usize) -> Self {
        Self { inbound: Budget::of(inbound_bytes) }
    }
}

/// Memory that the frames being read may hold at once. A value keeps its share until the
/// last handle on its bytes drops (the node stored it and answered), so inbound requests,
/// queued or in flight, from every connection together never hold more: past it a stream
/// waits to read (and times out) instead of allocating.
#[derive(Debug, Clone, Default)]
struct Budget(Option<Arc<Semaphore>>);

impl Budget {
    fn of(bytes: usize) -> Self {
        assert!(bytes >= MAX_MESSAGE_BYTES, "a budget under one message would never let it in");
        Self(Some(Arc::new(Semaphore::new(bytes))))
    }

    /// `len` bytes read from `io`, holding their share of the budget while they live.
    async fn read<T>(&self, io: &mut T, len: usize) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        let share = match &self.0 {
            Some(budget) => {
                let len = u32::try_from(len).expect("parts are under the message limit");
                Some(Arc::clone(budget).acquire_many_owned(len).await.expect("never closed"))
            }
            None => None,
        };
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(match share {
            Some(share) => Bytes::from_owner(Held { buf, _share: share }),
            None => Bytes::from(buf),
        })
    }
}

/// Bytes read within a budget, and their share of it.
struct Held {
    buf: Vec<u8>,
    _share: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

/// One length-prefixed part of a frame, of at most `limit` bytes.
async fn read_part<T>(io: &mut T, limit: usize, budget: &Budget) -> io::Result<Bytes>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of over {MAX_MESSAGE_BYTES} bytes refused: a part of {len} bytes, {limit} left"),
        ));
    }
    budget.read(io, len).await
}

async fn read_frame<T, M>(io: &mut T, budget: &Budget) -> io::Result<M>
where
    T: AsyncRead + Unpin + Send,
    M: serde::de::DeserializeOwned + Payloads,
{
    let head = read_part(io, MAX_MESSAGE_BYTES, budget).await?;
    let mut message: M = codec::decode(&head).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut left = MAX_MESSAGE_BYTES - head.len();
    drop(head);
    let values = message.payloads_mut();
    if values.len() > STORE_BATCH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message with {} item values refused (at most {STORE_BATCH_MAX})", values.len()),
        ));
    }
    for value in values {
        let bytes = read_part(io, left, budget).await?;
        left -= bytes.len();
        *value = bytes;
    }
    Ok(message)
}

async fn write_frame<T, M>(io: &mut T, mut message: M) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    M: serde::Serialize + Payloads,
{
    let values: Vec<Bytes> = message.payloads_mut().into_iter().map(std::mem::take).collect();
    let encoded = codec::encode(&message);
    let mut head = Vec::with_capacity(4 + encoded.len() + 4 * values.len());
    head.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    head.extend_from_slice(&encoded);
    for value in values {
        head.extend_from_slice(&(value.len() as u32).to_be_bytes());
        if value.len() <= INLINE_VALUE_MAX {
            head.extend_from_slice(&value);
        } else {
            io.write_all(&head).await?;
            head.clear();
            io.write_all(&value).await?;
        }
    }
    io.write_all(&head).await?;
    io.flush().await
}

impl libp2p::request_response::Codec for TransferCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, &self.inbound).await
    }

    /// Answers to our own requests, as many as this peer asks at once.
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, &Budget::default()).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, request: Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, request).await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, response: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, response).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use shoal_core::{ItemKey, ItemKind};

    use super::*;

    #[test]
    fn oversized_frames_are_refused_before_reading() {
        let mut frame = ((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 16]);
        let result: io::Result<Request> =
            futures::executor::block_on(read_frame(&mut Cursor::new(frame), &Budget::default()));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    fn round_trip<M>(message: M) -> M
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Payloads,
    {
        let mut buf = Cursor::new(Vec::new());
        futures::executor::block_on(write_frame(&mut buf, message)).unwrap();
        buf.set_position(0);
        futures::executor::block_on(read_frame(&mut buf, &Budget::default())).unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let small = Bytes::from_static(b"chunk");
        let large = Bytes::from(vec![7u8; 1 << 20]);
        for value in [Bytes::new(), small.clone(), large.clone()] {
            let response = Response::Item(Some(value));
            assert_eq!(round_trip(response.clone()), response);
        }
        assert_eq!(round_trip(Response::Item(None)), Response::Item(None));
        let key = |kind| ItemKey { kind, id: [3; 32] };
        let store = Request::Store { items: vec![(key(ItemKind::Chunk), large), (key(ItemKind::Manifest), small)] };
        assert_eq!(round_trip(store.clone()), store);
    }

    #[test]
    fn more_values_than_a_batch_holds_are_refused_before_reading_them() {
        let key = ItemKey { kind: ItemKind::Chunk, id: [3; 32] };
        let store = Request::Store { items: vec![(key, Bytes::new()); STORE_BATCH_MAX + 1] };
        let mut frame = Cursor::new(Vec::new());
        futures::executor::block_on(write_frame(&mut frame, store)).unwrap();
        // Only the head: a reader that went on to read values would hit the end instead.
        let mut frame = frame.into_inner();
        let head_len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        frame.truncate(4 + head_len);
        let result: io::Result<Request> =
            futures::executor::block_on(read_frame(&mut Cursor::new(frame), &Budget::default()));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    /// Issue 11, defect 8: what inbound requests hold together is bounded. A request
    /// whose bytes would pass the budget waits until an earlier one's bytes are dropped.
    #[tokio::test]
    async fn inbound_requests_wait_for_the_bytes_earlier_ones_hold() {
        let budget = Budget::of(MAX_MESSAGE_BYTES);
        let key = ItemKey { kind: ItemKind::Chunk, id: [3; 32] };
        let request = Request::Store { items: vec![(key, Bytes::from(vec![7u8; 5 << 20]))] };
        let mut frame = Cursor::new(Vec::new());
        write_frame(&mut frame, request.clone()).await.unwrap();
        let frame = frame.into_inner();
        let read = || {
            let (budget, frame) = (budget.clone(), frame.clone());
            tokio::spawn(async move { read_frame::<_, Request>(&mut Cursor::new(frame), &budget).await.unwrap() })
        };
        let first = read().await.unwrap();
        assert_eq!(first, request);
        let mut second = read();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut second).await;
        assert!(waited.is_err(), "the second request got past a budget the first one fills");
        drop(first);
        assert_eq!(second.await.unwrap(), request);
    }

    #[test]
    fn values_over_what_is_left_of_the_limit_are_refused() {
        let response = Response::Item(Some(Bytes::from(vec![1u8; 4 << 20])));
        let mut frame = Cursor::new(Vec::new());
        futures::executor::block_on(write_frame(&mut frame, response)).unwrap();
        let mut frame = frame.into_inner();
        // Claim a value of the whole limit: with the head counted, it is over.
        let at = frame.len() - (4 << 20) - 4;
        frame[at..at + 4].copy_from_slice(&(MAX_MESSAGE_BYTES as u32).to_be_bytes());
        let result: io::Result<Response> =
            futures::executor::block_on(read_frame(&mut Cursor::new(frame), &Budget::default()));
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
