//! Lingering over a request body left unread. A put refused before its body ended (by
//! the token check, by a bad parameter, or by the node: too few replicas, disk full)
//! would reach an HTTP/1 client as a broken pipe: the daemon closes a connection whose
//! body it did not read, and the client, still sending, never reads the answer. So the
//! rest of the body is read and dropped before the answer goes out, for at most
//! [`LINGER`], as nginx's lingering close does.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// How long the rest of a body is read before the answer goes out regardless.
const LINGER: Duration = Duration::from_secs(10);

/// Middleware: answers only once the request's body has ended, or after [`LINGER`]. A
/// client that sent `Expect: 100-continue` waits for the go-ahead before its body, so a
/// refusal reaches it whole without reading any: reading would ask for the upload.
pub(crate) async fn drain_unread_body(request: Request, next: Next) -> Response {
    if request.headers().contains_key(header::EXPECT) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let body = SharedBody(Arc::new(Mutex::new(body)));
    let response = next.run(Request::from_parts(parts, Body::new(body.clone()))).await;
    // A handler that read its body to the end leaves nothing: this returns at once.
    let _ = tokio::time::timeout(LINGER, async {
        let mut rest = body;
        while let Some(Ok(_)) = rest.frame().await {}
    })
    .await;
    response
}

/// A body the handler reads and this middleware can go on reading after it.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut *self.0.lock().expect("never poisoned")).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().expect("never poisoned").is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().expect("never poisoned").size_hint()
    }
}
