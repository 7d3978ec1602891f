//! The daemon's routes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use http_body::Frame;
use http_body_util::StreamBody;
use serde::{Deserialize, Serialize};
use shoal_core::wire::LIST_PAGE_MAX;
use shoal_core::{Consistency, ItemKey, ItemKind, NetworkStatus, ObjectId};
use shoal_node::{NameInfo, NamePage, Network, Node, PutReceipt, RepairStatus, WorkerStatus};
use shoal_store::Store;

use crate::ApiTokens;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{Metrics, RequestLabels};
use crate::range::{RangeRequest, parse_range};
use crate::{CHUNKS_HEADER, ERROR_TRAILER, ID_HEADER, MODIFIED_HEADER, SIZE_HEADER, VERSION_HEADER};

/// `GET /v1/names`: a page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameList {
    /// Live names, in name order.
    pub names: Vec<NameInfo>,
    /// Where the next page starts (`after=`); `null` on the last page.
    pub next: Option<String>,
    /// The peers that did not answer: names only they hold are missing from the page.
    pub unanswered: Vec<Unanswered>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unanswered {
    pub peer: String,
    pub reason: String,
}

impl From<NamePage> for NameList {
    fn from(page: NamePage) -> Self {
        let unanswered = page.unanswered.into_iter().map(|(peer, reason)| Unanswered { peer, reason }).collect();
        Self { names: page.names, next: page.next, unanswered }
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub network: NetworkStatus,
    pub replication_factor: usize,
    pub items_stored: u64,
    pub bytes_stored: u64,
    pub disk_free_bytes: u64,
    /// Writes are refused: the disk is full (or within the reserve kept free).
    pub disk_full: bool,
    /// How far each counted peer's clock is from this one's, as last measured.
    pub peer_clocks: Vec<PeerClockReport>,
    pub repair: RepairStatus,
    /// The background workers: what each is doing, its errors and its progress.
    pub workers: Vec<WorkerStatus>,
    pub version: String,
}

/// One peer's clock, seen from the answering peer: `offset_ms` is theirs minus ours,
/// known within half of `round_trip_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerClockReport {
    pub peer: String,
    pub offset_ms: i64,
    pub round_trip_ms: u64,
}

/// Optional parts of the API.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve `POST /v1/debug/corrupt/{kind}/{id}`, which damages a local item.
    pub fault_injection: bool,
    /// Accept only requests bearing one of these; without, every request is served.
    pub tokens: Option<ApiTokens>,
}

/// One entry of `GET /v1/items`: an item this peer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalItem {
    pub kind: ItemKind,
    /// The item's key, hex.
    pub id: String,
}

struct AppState<S, N> {
    node: Node<S, N>,
    metrics: Metrics,
}

type Shared<S, N> = State<Arc<AppState<S, N>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyParams {
    consistency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// The consistency level of a request (QUORUM unless it says otherwise).
fn consistency_of(params: Result<Query<ConsistencyParams>, QueryRejection>) -> Result<Consistency, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    match params.consistency {
        Some(text) => text
            .parse()
            .map_err(|e: shoal_core::ParseConsistencyError| ApiError::new(ErrorCode::BadRequest, e.to_string())),
        None => Ok(Consistency::default()),
    }
}

/// The API over `node`.
pub fn router<S: Store, N: Network>(node: Node<S, N>, options: Options) -> Router {
    let state = Arc::new(AppState { node, metrics: Metrics::new() });
    let mut router = Router::new();
    if options.fault_injection {
        router = router.route("/v1/debug/corrupt/{kind}/{id}", post(corrupt_item::<S, N>));
    }
    router = router
        .route("/v1/objects", post(put_object::<S, N>))
        .route("/v1/objects/{id}", get(get_object::<S, N>).delete(delete_object::<S, N>))
        .route("/v1/names", get(list_names::<S, N>))
        .route("/v1/names/{*name}", get(get_named::<S, N>).put(put_named::<S, N>).delete(delete_named::<S, N>))
        .route("/v1/status", get(status::<S, N>))
        .route("/v1/items", get(local_items::<S, N>))
        .route("/metrics", get(metrics::<S, N>))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
        })
        // The node bounds object sizes itself and never buffers a body whole.
        .layer(DefaultBodyLimit::disable());
    if let Some(tokens) = options.tokens {
        router = router.layer(middleware::from_fn_with_state(tokens, crate::auth::authorize));
    }
    // Outside the token check, so refused requests are counted too; outermost, every
    // answer waits for the end of its request's body.
    router
        .layer(middleware::from_fn_with_state(state.clone(), count_requests::<S, N>))
        .layer(middleware::from_fn(crate::linger::drain_unread_body))
        .with_state(state)
}

async fn count_requests<S: Store, N: Network>(State(state): Shared<S, N>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    response
}

fn parse_id(text: &str) -> Result<ObjectId, ApiError> {
    text.parse().map_err(|e: shoal_core::ParseIdError| ApiError::new(ErrorCode::MalformedId, e.to_string()))
}

async fn put_object<S: Store, N: Network>(
    State(state): Shared<S, N>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<PutReceipt>), ApiError> {
    let consistency = consistency_of(params)?;
    let receipt = state.node.put(counted_body(&state, body), consistency).await?;
    tracing::info!(object = %receipt.id, size = receipt.size, %consistency, "stored");
    Ok((StatusCode::CREATED, Json(receipt)))
}

/// The request body, counted into the bytes-in metric as it streams.
fn counted_body<S: Store, N: Network>(
    state: &AppState<S, N>,
    body: Body,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + '_ {
    body.into_data_stream().inspect_ok(|bytes| {
        state.metrics.object_bytes_in.inc_by(bytes.len() as u64);
    })
}

/// `PUT /v1/names/{name}`: answers both the object receipt and the binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPutReceipt {
    #[serde(flatten)]
    pub object: PutReceipt,
    pub name: NameInfo,
}

async fn put_named<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path(name): Path<String>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<NamedPutReceipt>), ApiError> {
    let consistency = consistency_of(params)?;
    let (object, name) = state.node.put_named(&name, counted_body(&state, body), consistency).await?;
    tracing::info!(name = %name.name, object = %object.id, version = %name.version, "bound");
    Ok((StatusCode::CREATED, Json(NamedPutReceipt { object, name })))
}

async fn get_named<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path(name): Path<String>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = consistency_of(params)?;
    let info = state
        .node
        .resolve_name(&name, consistency)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("name {name:?} not found")))?;
    let mut response = serve_object(&state, info.id, &headers).await?;
    let extra = response.headers_mut();
    extra.insert(VERSION_HEADER, header_value(&info.version));
    extra.insert(MODIFIED_HEADER, header_value(info.modified_ms));
    extra.insert(ID_HEADER, header_value(info.id));
    Ok(response)
}

async fn delete_object<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path(id): Path<String>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let consistency = consistency_of(params)?;
    let id = parse_id(&id)?;
    state.node.delete_object(id, consistency).await?;
    tracing::info!(object = %id, "deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_named<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path(name): Path<String>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let consistency = consistency_of(params)?;
    state.node.delete_name(&name, consistency).await?;
    tracing::info!(%name, "deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_names<S: Store, N: Network>(
    State(state): Shared<S, N>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<NameList>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let limit = match params.limit {
        None => LIST_PAGE_MAX,
        Some(limit @ 1..=LIST_PAGE_MAX) => limit,
        Some(limit) => {
            return Err(ApiError::new(ErrorCode::BadRequest, format!("limit {limit} is not 1 to {LIST_PAGE_MAX}")));
        }
    };
    let prefix = params.prefix.as_deref().unwrap_or("");
    Ok(Json(state.node.list_names(prefix, params.after.as_deref(), limit).await?.into()))
}

async fn get_object<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_object(&state, parse_id(&id)?, &headers).await
}

/// Streams object `id`, or the range `headers` ask for.
async fn serve_object<S: Store, N: Network>(
    state: &Arc<AppState<S, N>>,
    id: ObjectId,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let manifest = state.node.manifest(id).await?;
    let size = manifest.size;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, size) {
        RangeRequest::Whole => (StatusCode::OK, 0..size),
        RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, range),
        RangeRequest::Unsatisfiable => {
            let mut response =
                ApiError::new(ErrorCode::RangeNotSatisfiable, format!("range outside the object's {size} bytes"))
                    .into_response();
            response.headers_mut().insert(header::CONTENT_RANGE, header_value(format!("bytes */{size}")));
            return Ok(response);
        }
    };

    // A client that reads trailers (TE: trailers, as ours sends) learns why a body broke
    // off from a `x-shoal-error` trailer; any other client gets a Content-Length and sees
    // the body fall short of it. Neither ever gets wrong bytes.
    let trailers = accepts_trailers(headers);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if trailers {
        response_headers.insert(header::TRAILER, HeaderValue::from_static(ERROR_TRAILER));
    } else {
        response_headers.insert(header::CONTENT_LENGTH, header_value(range.end - range.start));
    }
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(header::ETAG, header_value(format!("\"{id}\"")));
    response_headers.insert(SIZE_HEADER, header_value(size));
    response_headers.insert(CHUNKS_HEADER, header_value(manifest.chunks.len()));
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {}-{}/{size}", range.start, range.end - 1);
        response_headers.insert(header::CONTENT_RANGE, header_value(content_range));
    }

    let state_out = state.clone();
    let chunks = state.node.read(manifest, range).map(move |chunk| {
        chunk
            .inspect(|bytes| {
                state_out.metrics.object_bytes_out.inc_by(bytes.len() as u64);
            })
            .inspect_err(|error| tracing::error!(object = %id, "read aborted: {error}"))
    });
    let body = if trailers {
        Body::new(StreamBody::new(chunks.map(move |chunk| {
            Ok::<_, std::convert::Infallible>(match chunk {
                Ok(bytes) => Frame::data(bytes),
                Err(error) => Frame::trailers(error_trailer(&format!("object {id}: {error}"))),
            })
        })))
    } else {
        Body::from_stream(chunks)
    };
    Ok((status, response_headers, body).into_response())
}

fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().filter_map(|value| value.to_str().ok()).any(|value| {
        value.split(',').any(|coding| coding.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("trailers"))
    })
}

/// The trailer that ends a body broken off by `message`, kept to printable ASCII (peers'
/// reasons are part of it) and to a bounded length.
fn error_trailer(message: &str) -> HeaderMap {
    const LONGEST: usize = 2048;
    let printable: String =
        message.chars().take(LONGEST).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
    let mut trailers = HeaderMap::new();
    trailers.insert(ERROR_TRAILER, HeaderValue::from_str(&printable).expect("printable ASCII"));
    trailers
}

fn header_value(value: impl ToString) -> HeaderValue {
    HeaderValue::from_str(&value.to_string()).expect("numbers and hex are valid header values")
}

async fn status<S: Store, N: Network>(State(state): Shared<S, N>) -> Result<Json<StatusReport>, ApiError> {
    let status = state.node.status().await?;
    Ok(Json(StatusReport {
        network: status.network,
        replication_factor: status.replication_factor,
        items_stored: status.items_stored,
        bytes_stored: status.bytes_stored,
        disk_free_bytes: status.disk_free_bytes,
        disk_full: status.disk_full,
        peer_clocks: status
            .peer_clocks
            .iter()
            .map(|(peer, clock)| PeerClockReport {
                peer: peer.to_string(),
                offset_ms: clock.offset_ms,
                round_trip_ms: clock.round_trip_ms,
            })
            .collect(),
        repair: status.repair,
        workers: status.workers,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }))
}

async fn metrics<S: Store, N: Network>(State(state): Shared<S, N>) -> Result<impl IntoResponse, ApiError> {
    let status = state.node.status().await?;
    let metrics = &state.metrics;
    metrics.items_stored.set(status.items_stored as i64);
    metrics.bytes_stored.set(status.bytes_stored as i64);
    metrics.disk_free_bytes.set(i64::try_from(status.disk_free_bytes).unwrap_or(i64::MAX));
    metrics.disk_full.set(i64::from(status.disk_full));
    metrics.peers_connected.set(status.network.peers_connected as i64);
    metrics.routing_table_peers.set(status.network.routing_table_peers as i64);
    metrics.set_repair(&status.repair);
    metrics.set_peer_clocks(&status.peer_clocks);
    metrics.set_workers(&status.workers);
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], metrics.encode()))
}

/// What this peer holds, for operators and tests that check placement.
async fn local_items<S: Store, N: Network>(State(state): Shared<S, N>) -> Result<Json<Vec<LocalItem>>, ApiError> {
    let items = state.node.local_items().await?;
    Ok(Json(items.into_iter().map(|key| LocalItem { kind: key.kind, id: hex::encode(key.id) }).collect()))
}

/// Fault injection: damages this peer's copy of an item, as a failing disk would.
async fn corrupt_item<S: Store, N: Network>(
    State(state): Shared<S, N>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind = ItemKind::ALL
        .into_iter()
        .find(|k| k.name() == kind)
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, format!("unknown item kind {kind:?}")))?;
    let id = parse_id(&id)?;
    match state.node.corrupt_local(ItemKey { kind, id: id.0 }).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::new(ErrorCode::NotFound, format!("this peer holds no {} {id}", kind.name()))),
    }
}
