//! Checks on the request head before any handler or extractor runs, each answered with the JSON
//! error: target too long (414), header section too large (431), a `Content-Length` above the body
//! limit (413, before anything reads the body, so `Expect: 100-continue` never gets "100
//! Continue"), a path that does not percent-decode to UTF-8 (400); then a deadline on the body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use tokio::time::{Instant, Sleep};

use super::error_response;
use crate::broker::Broker;
use crate::error::ErrorCode;

pub async fn check_request_head(
    State(broker): State<Arc<Broker>>,
    request: Request,
    next: Next,
) -> Response {
    let server = &broker.config.server;
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target_len > server.max_uri_bytes {
        return error_response(
            ErrorCode::UriTooLong,
            &format!(
                "the request target is longer than {} bytes",
                server.max_uri_bytes
            ),
        );
    }
    // As on the wire: "name: value\r\n" per field.
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > server.max_header_bytes {
        return error_response(
            ErrorCode::HeadersTooLarge,
            &format!(
                "the header section is larger than {} bytes",
                server.max_header_bytes
            ),
        );
    }
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body_limit = broker.config.limits.max_request_bytes;
    if announced.is_some_and(|length| length > body_limit as u64) {
        return error_response(
            ErrorCode::PayloadTooLarge,
            &format!("the request body is larger than {body_limit} bytes"),
        );
    }
    if percent_encoding::percent_decode_str(request.uri().path())
        .decode_utf8()
        .is_err()
    {
        // Segments split at '/', which never occurs inside a UTF-8 sequence, so checking the whole
        // path is checking every segment a route could extract.
        return error_response(
            ErrorCode::InvalidPath,
            "the path does not percent-decode to UTF-8",
        );
    }
    let deadline = Instant::now() + server.body_timeout;
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, deadline))))
        .await
}

/// The body did not arrive in full before its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// A request body that fails with [`BodyTimedOut`] when it is still incomplete at `deadline`.
struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(body: Body, deadline: Instant) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
