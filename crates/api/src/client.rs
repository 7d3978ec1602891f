//! The typed client of a daemon's API.

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::{StatusCode, header};
use shoal_core::{Consistency, ObjectId};
use shoal_node::PutReceipt;

use crate::error::{ApiError, ErrorBody};
use crate::{CHUNKS_HEADER, LocalItem, StatusReport};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{0}")]
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

    pub fn base_url(&self) -> &str {
        &self.base
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
        let mut request = self.http.post(format!("{}/v1/objects", self.base)).body(reqwest::Body::wrap_stream(body));
        if let Some(level) = consistency {
            request = request.query(&[("consistency", level.to_string())]);
        }
        let response = self.send(request).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Streams an object (or `range` of it) out.
    pub async fn get(&self, id: &ObjectId, range: Option<Range<u64>>) -> Result<ObjectDownload, ClientError> {
        let mut request = self.http.get(self.object_url(id));
        if let Some(range) = &range {
            request = request.header(header::RANGE, format!("bytes={}-{}", range.start, range.end.saturating_sub(1)));
        }
        let response = self.send(request).await?;
        let info = object_info(&response)?;
        let len = response.content_length().ok_or_else(|| ClientError::Protocol("no Content-Length".into()))?;
        let base = self.base.clone();
        let bytes = response
            .bytes_stream()
            .map_err(move |e| ClientError::Transport { url: base.clone(), reason: format!("transfer broke off: {e}") });
        Ok(ObjectDownload { info, len, bytes: bytes.boxed() })
    }

    pub async fn head(&self, id: &ObjectId) -> Result<ObjectInfo, ClientError> {
        let response = self.http.head(self.object_url(id)).send().await.map_err(|e| self.transport(e))?;
        match response.status() {
            status if status.is_success() => object_info(&response),
            // HEAD answers carry no body, so the error is rebuilt from the status.
            StatusCode::NOT_FOUND => {
                Err(ApiError::new(crate::ErrorCode::NotFound, format!("object {id} not found")).into())
            }
            status => Err(ClientError::Protocol(format!("HTTP {status}"))),
        }
    }

    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        let response = self.send(self.http.get(format!("{}/v1/status", self.base))).await?;
        response.json().await.map_err(|e| ClientError::Protocol(e.to_string()))
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

fn object_info(response: &reqwest::Response) -> Result<ObjectInfo, ClientError> {
    let headers = response.headers();
    let number = |name: &str| -> Result<u64, ClientError> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("missing {name} header")))
    };
    let size = match headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => range
            .rsplit('/')
            .next()
            .and_then(|total| total.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad Content-Range {range}")))?,
        None => number(header::CONTENT_LENGTH.as_str())?,
    };
    Ok(ObjectInfo { size, chunks: number(CHUNKS_HEADER)? })
}
