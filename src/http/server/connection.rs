//! One accepted connection: its activity (shared with the accept loop, which evicts the longest
//! idle connection at the bound), the watchdog that closes it when the header-read or idle timeout
//! passes, and the service that marks it busy from request head until the response is written.
//! On a TLS listener the handshake comes first, under the same header-read deadline, eviction and
//! shutdown as a request head.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::stream::ObservedStream;
use super::tls::{ClientCertificate, Tls, client_certificate};
use super::{Opened, answer_and_close, open_tls};
use crate::config::server::ServerSettings;
use crate::error::ErrorCode;

/// What the watchdog and the eviction policy need to know about one connection.
pub struct ConnectionState {
    activity: Mutex<Activity>,
    changed: Notify,
    evicted: Notify,
}

struct Activity {
    in_flight: usize,
    served: u64,
    /// Accepted, or last response written.
    idle_since: Instant,
    /// First byte of the next request head, if one arrived since `idle_since`.
    first_byte_at: Option<Instant>,
}

impl ConnectionState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            activity: Mutex::new(Activity {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                first_byte_at: None,
            }),
            changed: Notify::new(),
            evicted: Notify::new(),
        })
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        // The critical sections cannot panic; a poisoned lock still holds consistent data.
        self.activity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection became idle, or `None` while a request is in flight (not evictable).
    pub fn idle_since(&self) -> Option<Instant> {
        let activity = self.activity();
        (activity.in_flight == 0).then_some(activity.idle_since)
    }

    /// Asks the connection's task to drop the connection now.
    pub fn evict(&self) {
        self.evicted.notify_one();
    }

    /// No request is being handled or answered: what hyper writes now is its own answer.
    pub(super) fn between_requests(&self) -> bool {
        self.activity().in_flight == 0
    }

    pub(super) fn bytes_arrived(&self) {
        let mut activity = self.activity();
        if activity.in_flight == 0 && activity.first_byte_at.is_none() {
            activity.first_byte_at = Some(Instant::now());
            drop(activity);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.activity().in_flight += 1;
        self.changed.notify_one();
    }

    fn request_finished(&self) {
        let mut activity = self.activity();
        activity.in_flight = activity.in_flight.saturating_sub(1);
        activity.served += 1;
        activity.idle_since = Instant::now();
        activity.first_byte_at = None;
        drop(activity);
        self.changed.notify_one();
    }

    /// When the connection must be closed if nothing changes: a first request head (and any
    /// started head) gets the header-read timeout, an idle keep-alive connection the idle timeout.
    /// A request is in flight only until hyper has buffered its response body (it then drops the
    /// body), so a client that stops reading falls back under these timeouts as well.
    fn deadline(&self, settings: &ServerSettings) -> Option<Instant> {
        let activity = self.activity();
        if activity.in_flight > 0 {
            return None; // the body timeout and the handlers bound this phase
        }
        Some(match activity.first_byte_at {
            _ if activity.served == 0 => activity.idle_since + settings.header_read_timeout,
            Some(first_byte) => first_byte + settings.header_read_timeout,
            None => activity.idle_since + settings.idle_timeout,
        })
    }

    /// Resolves once the connection has waited longer than its current deadline.
    async fn expired(&self, settings: &ServerSettings) {
        loop {
            // notify_one keeps a permit, so a change between reading the deadline and waiting is not lost.
            match self.deadline(settings) {
                None => self.changed.notified().await,
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// Serves HTTP/1.1 on `stream` (after a TLS handshake, with `tls`) until the client leaves, a
/// timeout passes, the connection is evicted, or (after `shutdown` turns true) the request in
/// flight is answered.
pub async fn run(
    stream: TcpStream,
    tls: Option<Arc<Tls>>,
    state: Arc<ConnectionState>,
    router: Router,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    // Handed to each request (as axum's `ConnectInfo`): refusals are counted per source.
    let peer = stream.peer_addr().ok();
    let Some(tls) = tls else {
        return serve(stream, None, peer, state, router, settings, shutdown).await;
    };
    // The handshake counts against the first request head's deadline; a connection still in it
    // is idle for eviction, and shutdown drops it.
    let opened = tokio::select! {
        opened = open_tls(&tls, stream) => opened,
        () = state.expired(&settings) => {
            tracing::debug!("closing connection: no TLS handshake within the header-read timeout");
            return;
        }
        () = state.evicted.notified() => return,
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    match opened {
        Ok(Opened::Tls(stream)) => {
            let client = client_certificate(&stream);
            serve(*stream, client, peer, state, router, settings, shutdown).await;
        }
        Ok(Opened::Plaintext(stream)) => {
            // Plain HTTP on the TLS port: one JSON answer saying so, instead of a bare reset.
            let answer = super::stream::json_response(
                ErrorCode::MalformedRequest,
                "this port serves TLS: use https://",
                &[],
            );
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                answer_and_close(stream, &answer),
            )
            .await;
        }
        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
    }
}

async fn serve<S>(
    stream: S,
    client: Option<ClientCertificate>,
    peer: Option<SocketAddr>,
    state: Arc<ConnectionState>,
    router: Router,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ObservedStream::new(stream, Arc::clone(&state)));
    let service = TrackedService {
        router,
        state: Arc::clone(&state),
        client,
        peer,
    };
    let mut connection = pin!(
        hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None) // the watchdog below owns the timeouts
            .serve_connection(io, service)
    );
    let mut expired = pin!(state.expired(&settings));
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut expired => {
                tracing::debug!("closing connection: header-read or idle timeout");
                return;
            }
            () = state.evicted.notified() => {
                tracing::debug!("closing connection: evicted at the connection bound");
                return;
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                // Idle connections close now; a request in flight is answered, then the connection closes.
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The router as a hyper service that marks the connection busy while a request is handled,
/// and hands each request the connection's client certificate, if any, and peer address.
struct TrackedService {
    router: Router,
    state: Arc<ConnectionState>,
    client: Option<ClientCertificate>,
    peer: Option<SocketAddr>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        self.state.request_started();
        if let Some(client) = &self.client {
            request.extensions_mut().insert(client.clone());
        }
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let finished = RequestFinished(Arc::clone(&self.state));
        let mut router = self.router.clone();
        // Router::poll_ready is always ready, so calling it directly is allowed.
        let response = tower_service::Service::call(&mut router, request.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _finished: finished,
            }))
        })
    }
}

/// Marks the request finished when dropped: hyper drops the response body once it is written
/// (or the connection is gone), so the idle clock starts only then.
struct RequestFinished(Arc<ConnectionState>);

impl Drop for RequestFinished {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

pub struct TrackedBody {
    body: Body,
    _finished: RequestFinished,
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
