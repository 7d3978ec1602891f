//! The typed client of a daemon's API.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use http_body_util::BodyStream;
use reqwest::{StatusCode, header};
use shoal_core::{Consistency, ObjectId};
use shoal_node::PutReceipt;

use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::{
    CHUNKS_HEADER, ERROR_TRAILER, ID_HEADER, LocalItem, MODIFIED_HEADER, NameList, NamedPutReceipt, SIZE_HEADER,
    StatusReport, VERSION_HEADER,
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The daemon could not be reached or the transfer broke.
    #[error("cannot reach the daemon at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// Size and chunk count of a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub chunks: u64,
}

/// An object on its way down: its length and a stream of its bytes.
pub struct ObjectDownload {
    pub info: ObjectInfo,
    /// Bytes in this download (the range's length for a range).
    pub len: u64,
    pub bytes: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

impl std::fmt::Debug for ObjectDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectDownload").field("info", &self.info).field("len", &self.len).finish()
    }
}

/// Talks to one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the daemon at `base`, e.g. `http://127.0.0.1:7000`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Transport { url: base, reason: "the API URL must start with http://".into() });
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ClientError::Transport { url: base.clone(), reason: e.to_string() })?;
        Ok(Self { base, http })
    }

    /// The same client, sending `token` as `Authorization: Bearer` with every request.
    pub fn with_token(self, token: &str) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::Transport { url: self.base.clone(), reason };
        let mut value = header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| invalid("the token must be printable ASCII".into()))?;
        value.set_sensitive(true);
        let headers = header::HeaderMap::from_iter([(header::AUTHORIZATION, value)]);
        let http = reqwest::Client::builder().default_headers(headers).build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { http, ..self })
    }

    fn transport(&self, error: reqwest::Error) -> ClientError {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        ClientError::Transport { url: self.base.clone(), reason }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.error.into(),
            Err(_) => ClientError::Protocol(format!("HTTP {status}: {}", text.trim())),
        })
    }

    /// Streams `body` in as a new object.
    pub async fn put<B>(&self, body: B, consistency: Option<Consistency>) -> Result<PutReceipt, ClientError>
    where
        B: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let request = self.http.post(format!("{}/v1/objects", self.base)).body(reqwest::Body::wrap_stream(body));
        let response = self.send(with_consistency(request, consistency)).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams an object (or `range` of it) out.
    pub async fn get(&self, id: &ObjectId, range: Option<Range<u64>>) -> Result<ObjectDownload, ClientError> {
        let mut request = self.http.get(self.object_url(id)).header(header::TE, "trailers");
        if let Some(range) = &range {
            request = request.header(header::RANGE, format!("bytes={}-{}", range.start, range.end.saturating_sub(1)));
        }
        let response = self.send(request).await?;
        self.download(response)
    }

    /// The object's bytes as they arrive. A body that ends early ends the stream in an
    /// error: the daemon's reason when it sent one (the `x-shoal-error` trailer), else a
    /// transport error saying how much of it came.
    fn download(&self, response: reqwest::Response) -> Result<ObjectDownload, ClientError> {
        let info = object_info(&response)?;
        let len = body_len(&response, info.size)?;
        let base = self.base.clone();
        let frames = BodyStream::new(reqwest::Body::from(response));
        let bytes = stream::unfold(Some((frames, 0u64)), move |state| {
            let base = base.clone();
            async move {
                let (mut frames, mut received) = state?;
                let broke_off = |reason: String| ClientError::Transport { url: base.clone(), reason };
                loop {
                    let frame = match frames.next().await {
                        Some(Ok(frame)) => frame,
                        Some(Err(error)) => {
                            return Some((Err(broke_off(format!("transfer broke off: {error}"))), None));
                        }
                        None if received < len => {
                            let reason = format!("transfer broke off after {received} of {len} bytes");
                            return Some((Err(broke_off(reason)), None));
                        }
                        None => return None,
                    };
                    match frame.into_data() {
                        Ok(bytes) => {
                            received += bytes.len() as u64;
                            return Some((Ok(bytes), Some((frames, received))));
                        }
                        Err(frame) => {
                            let reason = frame.trailers_ref().and_then(|trailers| trailers.get(ERROR_TRAILER));
                            if let Some(reason) = reason {
                                let reason = String::from_utf8_lossy(reason.as_bytes()).into_owned();
                                return Some((Err(ApiError::new(ErrorCode::Unavailable, reason).into()), None));
                            }
                        }
                    }
                }
            }
        });
        Ok(ObjectDownload { info, len, bytes: bytes.boxed() })
    }

    pub async fn head(&self, id: &ObjectId) -> Result<ObjectInfo, ClientError> {
        let response = self.head_response(self.http.head(self.object_url(id)), &id.to_string()).await?;
        object_info(&response)
    }

    /// Size and chunk count of the object `name` is bound to, and the binding.
    pub async fn head_named(
        &self,
        name: &str,
        consistency: Option<Consistency>,
    ) -> Result<(ObjectInfo, NameHeaders), ClientError> {
        let request = with_consistency(self.http.head(self.name_url(name)), consistency);
        let response = self.head_response(request, &format!("name {name:?}")).await?;
        Ok((object_info(&response)?, name_headers(&response)?))
    }

    async fn head_response(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        match response.status() {
            status if status.is_success() => Ok(response),
            // HEAD answers carry no body, so the error is rebuilt from the status.
            StatusCode::NOT_FOUND => Err(ApiError::new(ErrorCode::NotFound, format!("{what} not found")).into()),
            StatusCode::BAD_REQUEST => {
                Err(ApiError::new(ErrorCode::BadRequest, format!("bad request for {what}")).into())
            }
            StatusCode::UNAUTHORIZED => Err(ApiError::new(ErrorCode::Unauthorized, "a valid token is needed").into()),
            StatusCode::FORBIDDEN => Err(ApiError::new(ErrorCode::Forbidden, "this token may not do that").into()),
            StatusCode::SERVICE_UNAVAILABLE => {
                Err(ApiError::new(ErrorCode::Unavailable, format!("{what} unavailable right now")).into())
            }
            status => Err(ClientError::Protocol(format!("HTTP {status}"))),
        }
    }

    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        let response = self.send(self.http.get(format!("{}/v1/status", self.base))).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams `body` in and binds `name` to it.
    pub async fn put_named<B>(
        &self,
        name: &str,
        body: B,
        consistency: Option<Consistency>,
    ) -> Result<NamedPutReceipt, ClientError>
    where
        B: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let request = self.http.put(self.name_url(name)).body(reqwest::Body::wrap_stream(body));
        let response = self.send(with_consistency(request, consistency)).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams the object `name` is bound to, and the binding.
    pub async fn get_named(
        &self,
        name: &str,
        consistency: Option<Consistency>,
    ) -> Result<(ObjectDownload, NameHeaders), ClientError> {
        let request = self.http.get(self.name_url(name)).header(header::TE, "trailers");
        let response = self.send(with_consistency(request, consistency)).await?;
        let named = name_headers(&response)?;
        Ok((self.download(response)?, named))
    }

    /// Deletes an unnamed object by id.
    pub async fn delete_object(&self, id: &ObjectId, consistency: Option<Consistency>) -> Result<(), ClientError> {
        self.send(with_consistency(self.http.delete(self.object_url(id)), consistency)).await?;
        Ok(())
    }

    pub async fn delete_name(&self, name: &str, consistency: Option<Consistency>) -> Result<(), ClientError> {
        self.send(with_consistency(self.http.delete(self.name_url(name)), consistency)).await?;
        Ok(())
    }

    /// A page of the live names under `prefix` that come after `after`: at most `limit`
    /// of them, the daemon's page size if `None`. Its `next` is the `after` of the next.
    pub async fn list_names(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<NameList, ClientError> {
        let mut request = self.http.get(format!("{}/v1/names", self.base)).query(&[("prefix", prefix)]);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn name_url(&self, name: &str) -> String {
        format!("{}/v1/names/{}", self.base, encode_path(name))
    }

    /// The items the daemon holds in its own store.
    pub async fn local_items(&self) -> Result<Vec<LocalItem>, ClientError> {
        let response = self.send(self.http.get(format!("{}/v1/items", self.base))).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn object_url(&self, id: &ObjectId) -> String {
        format!("{}/v1/objects/{id}", self.base)
    }
}

/// What a named get says about the binding it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameHeaders {
    pub id: ObjectId,
    pub version: String,
    pub modified_ms: u64,
}

fn name_headers(response: &reqwest::Response) -> Result<NameHeaders, ClientError> {
    let text = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Protocol(format!("missing {name} header")))
    };
    Ok(NameHeaders {
        id: text(ID_HEADER)?.parse().map_err(|e: shoal_core::ParseIdError| ClientError::Protocol(e.to_string()))?,
        version: text(VERSION_HEADER)?,
        modified_ms: text(MODIFIED_HEADER)?.parse().map_err(|_| ClientError::Protocol("bad modified time".into()))?,
    })
}

fn with_consistency(request: reqwest::RequestBuilder, consistency: Option<Consistency>) -> reqwest::RequestBuilder {
    match consistency {
        Some(level) => request.query(&[("consistency", level.to_string())]),
        None => request,
    }
}

/// Percent-encodes a name for a URL path, keeping its `/` separators.
fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn object_info(response: &reqwest::Response) -> Result<ObjectInfo, ClientError> {
    let number = |name: &str| -> Result<u64, ClientError> {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("missing {name} header")))
    };
    Ok(ObjectInfo { size: number(SIZE_HEADER)?, chunks: number(CHUNKS_HEADER)? })
}

/// How many bytes the body of an object's response holds: its Content-Length, or (for a
/// body that may end in a trailer) the span of its Content-Range, or the whole object.
fn body_len(response: &reqwest::Response, size: u64) -> Result<u64, ClientError> {
    if let Some(len) = response.content_length() {
        return Ok(len);
    }
    let Some(range) = response.headers().get(header::CONTENT_RANGE) else { return Ok(size) };
    let bad = || ClientError::Protocol(format!("bad Content-Range {range:?}"));
    let span = range.to_str().ok().and_then(|r| r.strip_prefix("bytes ")).and_then(|r| r.split('/').next());
    let (first, last) = span.and_then(|span| span.split_once('-')).ok_or_else(bad)?;
    let (first, last): (u64, u64) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
    last.checked_sub(first).map(|span| span + 1).ok_or_else(bad)
}
