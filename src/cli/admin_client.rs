//! A minimal HTTP/1.1 JSON client for the admin API: one request per connection, `http://` only
//! (run it next to the broker or through a tunnel; TLS belongs to the load balancer in front).

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct AdminClient {
    host: String,
    port: u16,
    admin_key: String,
}

impl AdminClient {
    pub fn new(url: &str, admin_key: String) -> Result<Self, String> {
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
        Ok(Self {
            host,
            port,
            admin_key,
        })
    }

    /// Sends a request and returns the status and the JSON body.
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
        let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                format!(
                    "cannot reach the broker at {}:{}: {e}",
                    self.host, self.port
                )
            })?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            self.host,
            self.admin_key,
            payload.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("malformed status line")?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = raw[split + 4..].to_vec();
    let body = if chunked {
        dechunk(&body).ok_or("malformed chunked body")?
    } else {
        body
    };
    Ok((status, body))
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
        let (status, body) =
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\":true}\n").unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"{\"a\":true}\n"[..]));
        let (status, body) = parse(b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"b\":\r\n2\r\n1}\r\n0\r\n\r\n").unwrap();
        assert_eq!((status, body.as_slice()), (202, &b"{\"b\":1}"[..]));
        assert!(parse(b"garbage").is_err());
    }

    #[test]
    fn urls_are_checked() {
        assert!(AdminClient::new("http://127.0.0.1:8787", "k".into()).is_ok());
        assert!(AdminClient::new("https://broker", "k".into()).is_err());
        assert!(AdminClient::new("http://:80", "k".into()).is_err());
    }
}
