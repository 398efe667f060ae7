//! The HTTP server: an accept loop over hyper's HTTP/1.1 connections with header-read, idle and
//! body timeouts, a bound on open connections below the open-file limit (at the bound the longest
//! idle connection is closed to make room), and a drain on shutdown bounded in time; optionally
//! TLS (`tls`), with the same timeouts, bound and drain.

mod connection;
mod stream;
pub mod tls;

pub use tls::{ClientCertificate, Tls, TlsError};

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::server::{ServerSettings, open_file_limit};
use crate::error::ErrorCode;
use connection::ConnectionState;

/// At most this many 503 refusals are being written at once; beyond it a newcomer at the bound is
/// closed at once. It is a part of the descriptors kept in reserve below the open-file limit.
const MAX_CONCURRENT_REFUSALS: usize = 16;

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves, then lets
/// requests in flight finish for at most `settings.shutdown_drain` and closes whatever is left.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    router: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let open_files = open_file_limit();
    let max_connections = settings.effective_max_connections(open_files);
    if max_connections < settings.max_connections {
        tracing::warn!(
            configured = settings.max_connections,
            used = max_connections,
            open_file_limit = open_files,
            "connection bound lowered to stay below the open-file limit"
        );
    }
    let table = ConnectionTable::new(max_connections);
    let refusals = Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match table.admit() {
                    Some((id, state)) => {
                        let table = Arc::clone(&table);
                        let task = connection::run(stream, tls.clone(), state, router.clone(), settings, stopped.clone());
                        connections.spawn(async move {
                            task.await;
                            table.remove(id);
                        });
                    }
                    None => match Arc::clone(&refusals).try_acquire_owned() {
                        // Each refusal holds a descriptor for up to a second: bounded, or a burst
                        // at the bound would exhaust the descriptors the broker itself needs.
                        Ok(permit) => {
                            let tls = tls.clone();
                            connections.spawn(async move {
                                refuse(stream, tls).await;
                                drop(permit);
                            });
                        }
                        Err(_) => drop(stream),
                    },
                },
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning; the bound makes this rare.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    let open = connections.len();
    tracing::info!(open, drain = ?settings.shutdown_drain, "draining connections");
    let drained = tokio::time::timeout(settings.shutdown_drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "drain time is over: closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

/// Every connection is busy at the bound: answer 503 JSON and close instead of queueing forever
/// (on a TLS listener after the handshake, within the same second).
async fn refuse(stream: TcpStream, tls: Option<Arc<Tls>>) {
    let answer = stream::json_response(
        ErrorCode::TooManyConnections,
        "the broker is at its connection limit; retry shortly",
        &[("retry-after", "1")],
    );
    let answered = async {
        match tls {
            None => answer_and_close(stream, &answer).await,
            Some(tls) => match open_tls(&tls, stream).await? {
                Opened::Tls(mut stream) => {
                    // The client writes its request once its side of the handshake is done: an
                    // answer that arrives before it is sent is taken for a broken connection.
                    let mut first = [0u8; 1024];
                    let _ = stream.read(&mut first).await?;
                    answer_and_close(*stream, &answer).await
                }
                Opened::Plaintext(stream) => answer_and_close(stream, &answer).await,
            },
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}

/// Writes `answer`, then closes: the caller bounds it in time.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    answer: &[u8],
) -> std::io::Result<()> {
    stream.write_all(answer).await?;
    stream.shutdown().await?;
    // Closing with the unread request in the buffer would send a reset that can destroy the
    // answer in flight; read until the client closes (bounded by the caller) instead.
    let mut sink = [0u8; 1024];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// A connection to the TLS listener once its first byte has arrived.
enum Opened {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The first byte is not a TLS handshake record: a plain HTTP client on the TLS port.
    Plaintext(TcpStream),
}

/// Waits for the client's first byte: a TLS handshake record (0x16) is handshaken, anything else
/// is left for a plaintext answer.
async fn open_tls(tls: &Tls, stream: TcpStream) -> std::io::Result<Opened> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != 0x16 {
        return Ok(Opened::Plaintext(stream));
    }
    Ok(Opened::Tls(Box::new(tls.accept(stream).await?)))
}

/// The open connections, for the bound and for choosing whom to evict.
struct ConnectionTable {
    max: usize,
    inner: Mutex<(u64, HashMap<u64, Arc<ConnectionState>>)>,
}

impl ConnectionTable {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            inner: Mutex::new((0, HashMap::new())),
        })
    }

    /// Registers a new connection; at the bound, first evicts the connection idle the longest
    /// (silent, slow-header and idle keep-alive connections), so that new clients get in. `None`
    /// when every connection has a request in flight.
    fn admit(&self) -> Option<(u64, Arc<ConnectionState>)> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (next_id, open) = &mut *guard;
        if open.len() >= self.max {
            let victim = open
                .iter()
                .filter_map(|(id, state)| state.idle_since().map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(state) = open.remove(&victim) {
                state.evict();
            }
        }
        *next_id += 1;
        let state = ConnectionState::new();
        open.insert(*next_id, Arc::clone(&state));
        Some((*next_id, state))
    }

    fn remove(&self, id: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.remove(&id);
    }
}
