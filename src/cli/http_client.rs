//! A minimal HTTP/1.1 JSON client for the broker's API: one request per connection, `http://`
//! only (run it next to the broker or through a tunnel; TLS belongs to the load balancer in
//! front). Used by the CLI, the benchmark driver and the integration tests.

use std::collections::HashMap;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct HttpClient {
    host: String,
    port: u16,
    /// Sent as `Authorization: Bearer <token>` when present.
    token: Option<String>,
}

/// A response: status, headers (names lower-cased) and the raw body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpClient {
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host.to_owned(),
                port.parse().map_err(|_| format!("{url:?}: bad port"))?,
            ),
            None => (authority.to_owned(), 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Self { host, port, token })
    }

    /// Sends a request and returns the status and the JSON body (`null` when empty).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let (status, body) = self.call_raw(method, path, body).await?;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|e| format!("response is not JSON: {e}"))?
        };
        Ok((status, json))
    }

    /// Sends a request and returns the status and the raw body (e.g. the metrics text).
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), String> {
        let payload = body.map(Value::to_string).unwrap_or_default();
        let response = self.send(method, path, payload.as_bytes(), &[]).await?;
        Ok((response.status, response.body))
    }

    /// Sends any payload with extra headers; a refused or cut connection is an `Err`.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<RawResponse, String> {
        let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the broker at {}:{}: {e}",
                    self.host, self.port
                )
            })?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.host,
            payload.len()
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(payload).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<RawResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = raw[split + 4..].to_vec();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        dechunk(&body).ok_or("malformed chunked body")?
    } else {
        body
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..end]).ok()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(end + 2..end + 2 + size)?);
        data = data.get(end + 2 + size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let response = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nX-Request-ID: r1\r\n\r\n{\"a\":true}\n",
        )
        .unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{\"a\":true}\n"[..])
        );
        assert_eq!(response.headers["x-request-id"], "r1");
        let response = parse(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"b\":\r\n2\r\n1}\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (202, &b"{\"b\":1}"[..])
        );
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(HttpClient::new("http://127.0.0.1:8787", None).is_ok());
        assert!(HttpClient::new("https://broker", None).is_err());
        assert!(HttpClient::new("http://:80", None).is_err());
    }
}
