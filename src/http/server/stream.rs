//! The stream under hyper (TCP, or TLS over TCP): notes when request bytes arrive (for the header-read timeout) and
//! replaces hyper's own body-less answers to unparseable requests (400, 414, 431) with the
//! broker's JSON error, since hyper writes those before any service sees the request.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::ConnectionState;
use crate::error::ErrorCode;
use crate::http::errors::ErrorBody;

pub struct ObservedStream<S> {
    stream: S,
    state: Arc<ConnectionState>,
    /// Our JSON answer in place of hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S: AsyncWrite + Unpin> ObservedStream<S> {
    pub fn new(stream: S, state: Arc<ConnectionState>) -> Self {
        Self {
            stream,
            state,
            replacement: None,
        }
    }

    /// Writes the replacement to the end, then reports hyper's `claimed` bytes as written: hyper
    /// closes the connection after its parse-error answer, so nothing of its own must follow ours.
    fn poll_replacement(
        &mut self,
        cx: &mut Context<'_>,
        claimed: usize,
    ) -> Poll<io::Result<usize>> {
        if let Some((bytes, written)) = &mut self.replacement {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(claimed))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ObservedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.state.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ObservedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Only between requests: hyper answers a parse error before any service call, whereas a
        // response the router produced is written while its request is still in flight.
        if self.replacement.is_none() {
            match json_for_parse_error(buf).filter(|_| self.state.between_requests()) {
                Some(answer) => self.replacement = Some((answer, 0)),
                None => return Pin::new(&mut self.stream).poll_write(cx, buf),
            }
        }
        self.poll_replacement(cx, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A response head is always the first slice hyper hands over, so checking it suffices.
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if self.replacement.is_some()
            || (self.state.between_requests() && json_for_parse_error(first).is_some())
        {
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Our answer if `head` is one of hyper's automatic parse-error responses: status 400, 414 or
/// 431 and no `content-type` (every response the router produces has one).
fn json_for_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let status = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?
        .get(..3)?;
    let (code, message) = match status {
        b"400" => (
            ErrorCode::MalformedRequest,
            "the request is not valid HTTP/1.1",
        ),
        b"414" => (ErrorCode::UriTooLong, "the request target is too long"),
        b"431" => (
            ErrorCode::HeadersTooLarge,
            "the request header section is too large",
        ),
        _ => return None,
    };
    // hyper's answer is a bare head written in one piece: it ends at the first blank line, says
    // `content-length: 0` and has no `content-type`. A slice of a response body never matches:
    // bodies are JSON or Prometheus text, which hold no raw CR LF CR LF.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let mut lines = head[..end].split(|&b| b == b'\n').map(<[u8]>::trim_ascii);
    let header = |line: &[u8], name: &[u8]| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    };
    let (mut has_content_type, mut empty_body) = (false, false);
    for line in lines.by_ref().skip(1) {
        has_content_type |= header(line, b"content-type");
        empty_body |= header(line, b"content-length") && line.ends_with(b" 0");
    }
    (!has_content_type && empty_body).then(|| json_response(code, message, &[]))
}

/// A complete `Connection: close` HTTP/1.1 response with the broker's JSON error body, for answers
/// given outside the router (it carries a fresh `X-Request-ID` like every other response).
pub fn json_response(code: ErrorCode, message: &str, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let status = code.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = serde_json::to_string(&ErrorBody::new(code, message))
        .unwrap_or_else(|_| String::from("{}"));
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: req_{}\r\n",
        status.as_u16(),
        body.len(),
        uuid::Uuid::new_v4().simple()
    );
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_bare_parse_errors_are_replaced() {
        let bare =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_for_parse_error(bare).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        assert!(answer.contains(r#""code":"headers_too_large""#), "{answer}");
        let ours = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(json_for_parse_error(ours).is_none());
        assert!(json_for_parse_error(b"HTTP/1.1 100 Continue\r\n\r\n").is_none());
        assert!(json_for_parse_error(b"HTTP/1.1 404 Not Found\r\n\r\n").is_none());
        // A stored value that looks like a parse error, met at the start of a write buffer in
        // the middle of a response body, is left alone.
        let inside_a_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore body";
        assert!(json_for_parse_error(inside_a_body).is_none());
        let no_length = b"HTTP/1.1 400 Bad Request\r\nx: y\r\n\r\n";
        assert!(json_for_parse_error(no_length).is_none());
    }
}
