//! The API over one real node (R = 1, no other peer): how a get that breaks off and a
//! listing that lacks a peer reach a client.

use std::io::{Read, Write};

use bytes::Bytes;
use futures::{StreamExt, stream};
use shoal_api::{Client, ClientError, ErrorCode, Options, router};
use shoal_core::NetworkStatus;
use shoal_core::placement::Lookup;
use shoal_core::wire::{Request, Response};
use shoal_core::{CHUNK_SIZE, Consistency, ItemKey, ItemKind, ObjectId, PeerKey};
use shoal_node::{Network, NetworkError, Node, NodeConfig};
use shoal_store::MemoryStore;

/// A network of one: every other peer is unreachable.
#[derive(Debug, Clone)]
struct Alone(PeerKey);

impl Network for Alone {
    fn local_peer(&self) -> &PeerKey {
        &self.0
    }

    async fn closest_peers(&self, _key: &[u8]) -> Result<Lookup, NetworkError> {
        Ok(Lookup { peers: Vec::new(), finished: true })
    }

    async fn request(&self, peer: &PeerKey, _request: Request) -> Result<Response, NetworkError> {
        Err(NetworkError(format!("{peer} unreachable")))
    }

    async fn status(&self) -> Result<NetworkStatus, NetworkError> {
        Ok(NetworkStatus {
            peer_id: self.0.to_string(),
            listen_addrs: Vec::new(),
            announced_addrs: Vec::new(),
            routing_table_peers: 0,
            peers_connected: 0,
            network_key: None,
            handshakes_failed: 0,
        })
    }
}

/// A node serving its API on a free loopback port, a client of it, and its address.
async fn one_peer() -> (Node<MemoryStore, Alone>, Client, String) {
    one_peer_with(Options::default()).await
}

async fn one_peer_with(options: Options) -> (Node<MemoryStore, Alone>, Client, String) {
    let config = NodeConfig { replication_factor: 1, ..NodeConfig::default() };
    let node = Node::new(config, MemoryStore::new(), Alone(PeerKey::from_bytes(b"alone"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = router(node.clone(), options);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (node, Client::new(&format!("http://{addr}")).unwrap(), addr)
}

/// `len` bytes in which no two chunks are alike.
fn object(len: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut step = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 56) as u8
    };
    (0..len).map(|_| step()).collect::<Vec<u8>>().into()
}

fn body(bytes: Bytes) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    stream::iter([Ok(bytes)])
}

/// The download's bytes up to its first error, and that error.
async fn download(
    client: &Client,
    id: &ObjectId,
    range: Option<std::ops::Range<u64>>,
) -> (Vec<u8>, Option<ClientError>) {
    let mut download = client.get(id, range).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(item) = download.bytes.next().await {
        match item {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(error) => return (bytes, Some(error)),
        }
    }
    (bytes, None)
}

/// A plain HTTP/1.1 exchange, read until the daemon closes the connection.
fn raw_http(addr: &str, request: &str) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    // A body that breaks off may end in a reset rather than a clean close.
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// Issue 11, defect 7: a get whose chunk has no good copy left. Our client learns from the
/// daemon (a trailer) which object and chunk failed, not just "transfer broke off"; a
/// client that reads no trailers gets a Content-Length the body falls short of. Neither
/// sees a wrong byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_breaks_off_names_the_object_and_chunk() {
    let (node, client, addr) = one_peer().await;
    let bytes = object(3 * CHUNK_SIZE + 100);
    let id = client.put(body(bytes.clone()), Some(Consistency::All)).await.unwrap().id;
    let (whole, error) = download(&client, &id, None).await;
    assert!(error.is_none() && whole == bytes, "{error:?}");
    let (range, error) = download(&client, &id, Some(10..2 * CHUNK_SIZE as u64)).await;
    assert!(error.is_none() && range == bytes[10..2 * CHUNK_SIZE], "{error:?}");

    let manifest = node.manifest(id).await.unwrap();
    assert!(node.corrupt_local(ItemKey::chunk(manifest.chunks[1].id)).await.unwrap());
    let (received, error) = download(&client, &id, None).await;
    assert!(received == bytes[..CHUNK_SIZE], "{} bytes before the break: {error:?}", received.len());
    let Some(ClientError::Api(error)) = error else { panic!("no reason from the daemon: {error:?}") };
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.message.contains(&format!("object {id}")) && error.message.contains("chunk 1 "), "{error}");

    let answer = raw_http(&addr, &format!("GET /v1/objects/{id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    let head_end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&answer[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains(&format!("content-length: {}", bytes.len())), "{head}");
    let body = &answer[head_end..];
    assert!(body.len() < bytes.len() && bytes.starts_with(body), "{} bytes of body", body.len());
}

/// Issue 11, defect 7: a listing walks bounded pages, and one that lacks a peer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_come_in_pages_and_name_the_peers_that_did_not_answer() {
    let (node, client, addr) = one_peer().await;
    for name in ["a", "b", "c", "d", "e"] {
        client.put_named(name, body(object(10)), Some(Consistency::All)).await.unwrap();
    }
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = client.list_names("", after.as_deref(), Some(2)).await.unwrap();
        assert!(page.names.len() <= 2 && page.unanswered.is_empty(), "{page:?}");
        names.extend(page.names.into_iter().map(|info| info.name));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    for limit in ["0", "1001", "many"] {
        let answer = raw_http(&addr, &format!("GET /v1/names?limit={limit} HTTP/1.1\r\nConnection: close\r\n\r\n"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains(r#""code":"bad_request""#), "{answer}");
    }

    // A peer that counts as a holder but does not answer.
    let ghost = PeerKey::from_bytes(b"ghost");
    node.peer_up(ghost.clone(), 0);
    let page = client.list_names("", None, None).await.unwrap();
    assert_eq!(page.names.len(), 5);
    assert_eq!(page.unanswered.len(), 1, "{page:?}");
    assert_eq!(page.unanswered[0].peer, ghost.to_string());
    assert!(page.unanswered[0].reason.contains("unreachable"), "{page:?}");
}

/// Issue 14: with tokens, no token and a wrong one get 401, a read token on a write gets
/// 403, each with the JSON error body, and none of them changes what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_token_nothing_is_read_or_changed() {
    const READER: &str = "reader-000000000000000000000000000000000000";
    const WRITER: &str = "writer-000000000000000000000000000000000000";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, format!("read {READER}\nread-write {WRITER}\n")).unwrap();
    let tokens = shoal_api::ApiTokens::load(&path).unwrap();
    let (node, anonymous, addr) = one_peer_with(Options { tokens: Some(tokens), ..Options::default() }).await;
    let reader = anonymous.clone().with_token(READER).unwrap();
    let writer = anonymous.clone().with_token(WRITER).unwrap();
    let stranger = anonymous.clone().with_token(&WRITER.replace('0', "1")).unwrap();

    let kept = object(1000);
    let id = writer.put(body(kept.clone()), Some(Consistency::All)).await.unwrap().id;
    writer.put_named("kept", body(kept.clone()), Some(Consistency::All)).await.unwrap();
    let held = node.local_items().await.unwrap();

    let code = |result: Result<(), ClientError>| match result {
        Err(ClientError::Api(error)) => error.code,
        other => panic!("not refused: {other:?}"),
    };
    for (client, expected) in [(&anonymous, ErrorCode::Unauthorized), (&stranger, ErrorCode::Unauthorized)] {
        assert_eq!(code(client.status().await.map(drop)), expected);
        assert_eq!(code(client.get(&id, None).await.map(drop)), expected);
        assert_eq!(code(client.list_names("", None, None).await.map(drop)), expected);
    }
    for (client, expected) in
        [(&anonymous, ErrorCode::Unauthorized), (&stranger, ErrorCode::Unauthorized), (&reader, ErrorCode::Forbidden)]
    {
        assert_eq!(code(client.put(body(object(10)), None).await.map(drop)), expected);
        assert_eq!(code(client.put_named("kept", body(object(10)), None).await.map(drop)), expected);
        assert_eq!(code(client.delete_name("kept", None).await), expected);
        assert_eq!(code(client.delete_object(&id, None).await), expected);
    }
    assert_eq!(node.local_items().await.unwrap(), held, "a refused request changed what is stored");

    let (bytes, error) = download(&reader, &id, None).await;
    assert!(error.is_none() && bytes == kept, "{error:?}");
    assert_eq!(reader.list_names("", None, None).await.unwrap().names.len(), 1);
    let answer = raw_http(&addr, "DELETE /v1/names/kept HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401") && answer.contains("www-authenticate: Bearer"), "{answer}");
    assert!(answer.contains(r#"{"error":{"code":"unauthorized","#), "{answer}");
}

/// A put refused before its body ended, by the node (too few replicas) or by the API
/// (no token), reaches the client as that refusal, not as a broken pipe: the daemon reads
/// the rest of the body before it answers. Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_refused_before_its_body_ended_gets_its_reason() {
    let config = NodeConfig { replication_factor: 3, ..NodeConfig::default() };
    let node = Node::new(config, MemoryStore::new(), Alone(PeerKey::from_bytes(b"alone"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "read-write writer-000000000000000000000000000000000000\n").unwrap();
    let options = Options { tokens: Some(shoal_api::ApiTokens::load(&path).unwrap()), ..Options::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(node.clone(), options);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let anonymous = Client::new(&base).unwrap();
    let writer = anonymous.clone().with_token("writer-000000000000000000000000000000000000").unwrap();

    let large = object(48 * CHUNK_SIZE);
    let code = |result: Result<shoal_node::PutReceipt, ClientError>| match result {
        Err(ClientError::Api(error)) => error.code,
        other => panic!("not refused with a reason: {other:?}"),
    };
    assert_eq!(code(writer.put(body(large.clone()), Some(Consistency::All)).await), ErrorCode::InsufficientReplicas);
    // What a failed put leaves is a chunk under an expiring upload lease, never an object.
    let held = node.local_items().await.unwrap();
    assert!(held.iter().all(|key| matches!(key.kind, ItemKind::Chunk | ItemKind::References)), "{held:?}");
    assert_eq!(code(anonymous.put(body(large), Some(Consistency::One)).await), ErrorCode::Unauthorized);
    assert_eq!(node.local_items().await.unwrap(), held, "a put without a token changed what is stored");
}
