//! A keep-alive HTTP/1.1 load generator: `concurrency` connections (plain, or TLS with a client
//! configuration), each sending requests back to back for a fixed duration; latencies recorded per
//! request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// TLS for the connections: the client configuration (trusting the broker's CA).
pub type Tls = Option<Arc<rustls::ClientConfig>>;

/// What one request looks like; `body_for(i)` lets each request differ (e.g. unique names).
pub struct RequestPlan {
    pub method: &'static str,
    pub path_for: Box<dyn Fn(u64) -> String + Send + Sync>,
    pub body_for: Box<dyn Fn(u64) -> String + Send + Sync>,
    pub token: String,
    pub expect_status: u16,
}

#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latencies_us: Vec<u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index] as f64 / 1000.0
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

struct Connection {
    reader: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
}

impl Connection {
    async fn open(port: u16, tls: &Tls) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1")
                    .map_err(std::io::Error::other)?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        let (read, write) = tokio::io::split(stream);
        Ok(Self {
            reader: BufReader::new(read),
            writer: write,
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> std::io::Result<u16> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).await?;
        Ok(status)
    }
}

/// Runs `plan` on `concurrency` keep-alive connections (over TLS with `tls`) for `duration`.
pub async fn run(
    port: u16,
    tls: &Tls,
    concurrency: usize,
    duration: Duration,
    plan: Arc<RequestPlan>,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + duration;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (plan, counter, tls) = (Arc::clone(&plan), Arc::clone(&counter), tls.clone());
        workers.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            let mut connection = match Connection::open(port, &tls).await {
                Ok(c) => c,
                Err(_) => {
                    result.errors += 1;
                    return result;
                }
            };
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (path, body) = ((plan.path_for)(i), (plan.body_for)(i));
                let sent = Instant::now();
                match connection
                    .send(plan.method, &path, &plan.token, &body)
                    .await
                {
                    Ok(status) if status == plan.expect_status => {
                        result.requests += 1;
                        result.latencies_us.push(sent.elapsed().as_micros() as u64);
                    }
                    Ok(_) => result.errors += 1,
                    Err(_) => {
                        result.errors += 1;
                        match Connection::open(port, &tls).await {
                            Ok(c) => connection = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            result
        }));
    }
    let mut total = LoadResult::default();
    for worker in workers {
        if let Ok(result) = worker.await {
            total.requests += result.requests;
            total.errors += result.errors;
            total.latencies_us.extend(result.latencies_us);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}
