//! A JSON client for the broker's API on hyper-util's client, over `http://` or `https://`
//! (hyper-rustls with the ring provider the AWS SDK already builds; the public web roots unless a
//! TLS configuration is given, e.g. with a private CA and a client certificate). Used by the CLI;
//! the integration tests and the benchmark driver include this same file by path, so it is no part
//! of the library's public API.

use std::collections::HashMap;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct HttpClient {
    /// `http://host:port` or `https://host:port`, without a trailing slash.
    base: String,
    /// Sent as `Authorization: Bearer <token>` when present.
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A response: status, headers (names lower-cased) and the raw body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    #[allow(dead_code)] // read by the tests that include this file, not by the CLI
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpClient {
    #[allow(dead_code)] // the tests and the benchmark use it; the CLI passes its TLS settings
    pub fn new(url: &str, token: Option<String>) -> Result<Self, String> {
        Self::with_tls(url, token, None)
    }

    /// `tls` for `https://` URLs (trusted roots, a client certificate); `None`: the public web roots.
    pub fn with_tls(
        url: &str,
        token: Option<String>,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let scheme = match uri.scheme_str() {
            Some(scheme @ ("http" | "https")) => scheme.to_owned(),
            _ => {
                return Err(format!(
                    "{url:?}: only http:// and https:// URLs are supported"
                ));
            }
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| format!("{url:?}: no host"))?;
        let tls = match tls {
            Some(tls) => tls,
            None => {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth()
            }
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        // No idle connections are kept: one request per connection, as the tests that count
        // connections and kill brokers expect, and the CLI sends one request a second at most.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(Self {
            base: format!("{scheme}://{authority}"),
            token,
            client,
        })
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
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            // From bytes, not text: tests send non-ASCII values on purpose.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|e| e.to_string())?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(payload)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the broker at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), value)
            })
            .collect();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(HttpClient::new("http://127.0.0.1:8787", None).is_ok());
        assert!(HttpClient::new("https://broker", None).is_ok());
        assert!(HttpClient::new("http://:80", None).is_err());
        assert!(HttpClient::new("ftp://broker", None).is_err());
    }
}
