//! Coherence between broker processes on one PostgreSQL database. Each process caches the BYOK
//! routing view (with hot DEKs) and verified API keys; a revocation made through another process
//! must reach them within a bound. Two paths, one refresh:
//! - notifications: a session LISTENs for the changes the database announces on commit; each one
//!   refreshes what it names at once (milliseconds);
//! - a backstop: every `check_interval` the stored revisions are compared with what this process
//!   loaded, which catches whatever a lost notification would have said (the listener's
//!   connection dropped: it reconnects with backoff, then refreshes everything once, since what
//!   was announced meanwhile is gone).
//!
//! The refresh reloads the routing view and purges the DEKs of CMKs no longer servable
//! (`Byok::refresh_from_store`), and empties the verified-key cache. On SQLite there is one
//! process and nothing to listen to: the broker does not start this worker.
//!
//! Fail closed: each check that reads the revisions (and reloads what moved) confirms the view
//! for one more interval plus a second; when checks fail, the keyring refuses every key
//! resolution once that runs out ([`crate::keyring::ViewFreshness`]). The checks and reloads run
//! on connections reserved for them ([`Store::reserved`]), so a saturated pool of request
//! connections does not make a healthy broker refuse.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::VerifiedKeys;
pub use crate::config::workers::CoherenceConfig;
use crate::services::byok::Byok;
use crate::services::readiness::ListenerHealth;
use crate::store::{Change, ChangeListener, Store, StoreError};

/// The first pause before listening again after the connection was lost or a connect failed;
/// doubled on each failure up to [`MAX_RETRY`]. The backstop keeps the bound meanwhile.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A listening session that lasted this long was a working one: the next loss starts the backoff
/// from [`FIRST_RETRY`] again. One dropped sooner (a server that accepts then ends sessions)
/// keeps doubling it, so a flapping server is not reconnected to four times a second forever.
const STABLE_LISTENING: Duration = Duration::from_secs(10);

/// How long past one check interval a confirmed view stays trusted: the published bound is
/// "check interval + 1 s" for a change whose notification is lost, and the same for a broker
/// that cannot check at all.
const CONFIRMATION_GRACE: Duration = Duration::from_secs(1);

/// What the worker refreshes, and what it last saw.
pub struct Coherence {
    store: Store,
    /// Weak, like the watcher's: the worker ends when the broker is dropped.
    byok: Weak<Byok>,
    verified: VerifiedKeys,
    config: CoherenceConfig,
    /// The API-key revision the verified-key cache was last emptied at; `None` until the first
    /// check, which therefore empties it once (fail closed).
    api_keys_seen: Option<u64>,
    /// The last revision check failed (logged once, not on every tick).
    check_failing: bool,
    /// The listener's state, for readiness.
    health: Arc<ListenerHealth>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<Option<ChangeListener>, StoreError>> + Send>>;

/// The listener's state.
enum Link {
    /// Since when: see [`STABLE_LISTENING`].
    Listening(ChangeListener, Instant),
    Connecting(Connecting),
    Down {
        retry_at: Instant,
    },
}

enum Event {
    Tick,
    Changed(Result<Change, StoreError>),
    Retry,
    Connected(Result<Option<ChangeListener>, StoreError>),
}

impl Coherence {
    pub fn new(
        store: Store,
        byok: Weak<Byok>,
        verified: VerifiedKeys,
        config: CoherenceConfig,
        health: Arc<ListenerHealth>,
    ) -> Self {
        Self {
            store,
            byok,
            verified,
            config,
            api_keys_seen: None,
            check_failing: false,
            health,
        }
    }

    /// Runs until `stop` is cancelled or the BYOK service is dropped.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut link = Link::Connecting(self.connect());
        let mut retry = FIRST_RETRY;
        let mut ticks = tokio::time::interval(self.config.check_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let event = match &mut link {
                Link::Listening(listener, _) => tokio::select! {
                    () = stop.cancelled() => return,
                    change = listener.next() => Event::Changed(change),
                    _ = ticks.tick() => Event::Tick,
                },
                Link::Connecting(connecting) => tokio::select! {
                    () = stop.cancelled() => return,
                    connected = connecting => Event::Connected(connected),
                    _ = ticks.tick() => Event::Tick,
                },
                Link::Down { retry_at } => tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(*retry_at) => Event::Retry,
                    _ = ticks.tick() => Event::Tick,
                },
            };
            let step = match event {
                Event::Tick => Step::Check,
                Event::Changed(Ok(change)) => Step::Refresh(change),
                Event::Changed(Err(e)) => {
                    self.health.down();
                    tracing::warn!(error = %e, "lost the change listener's connection; listening again, the revision check covers the gap");
                    if let Link::Listening(_, since) = &link {
                        retry = if since.elapsed() >= STABLE_LISTENING {
                            FIRST_RETRY
                        } else {
                            (retry * 2).min(MAX_RETRY)
                        };
                    }
                    link = Link::Down {
                        retry_at: Instant::now() + retry,
                    };
                    continue;
                }
                Event::Retry => {
                    link = Link::Connecting(self.connect());
                    continue;
                }
                Event::Connected(Ok(Some(listener))) => {
                    self.health.listening();
                    link = Link::Listening(listener, Instant::now());
                    tracing::debug!("listening for changes other brokers commit");
                    // Whatever was announced before the session listened is lost: refresh all.
                    Step::Refresh(Change::Unknown)
                }
                // SQLite: nothing to listen to (the broker does not start the worker there).
                Event::Connected(Ok(None)) => return,
                Event::Connected(Err(e)) => {
                    self.health.down();
                    tracing::warn!(error = %e, retry_ms = retry.as_millis() as u64, "cannot listen for changes; the revision check covers the gap");
                    link = Link::Down {
                        retry_at: Instant::now() + retry,
                    };
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            let flow = match step {
                Step::Check => stop.run_until_cancelled(self.check_revisions()).await,
                Step::Refresh(change) => stop.run_until_cancelled(self.refresh(change)).await,
            };
            match flow {
                None | Some(Flow::Stop) => return,
                Some(Flow::Continue) => {}
            }
        }
    }

    fn connect(&self) -> Connecting {
        let store = self.store.clone();
        Box::pin(async move { store.listen_for_changes().await })
    }

    /// The backstop: refreshes whatever the stored revisions say changed since it was loaded,
    /// then confirms the view current until one interval plus [`CONFIRMATION_GRACE`] from the
    /// check's start. A check that fails confirms nothing (the keyring refuses once the last
    /// confirmation runs out) and empties the verified-key cache, so an API key revoked elsewhere
    /// is looked up again rather than trusted from the cache.
    async fn check_revisions(&mut self) -> Flow {
        let started = std::time::Instant::now();
        let revisions = match self.store.revisions().await {
            Ok(revisions) => revisions,
            Err(e) => {
                self.verified.forget_all();
                if !self.check_failing {
                    tracing::warn!(error = %e, "cannot read the stored revisions; requests that need a key are refused once the last confirmation runs out; retrying every check");
                    self.check_failing = true;
                }
                return Flow::Continue;
            }
        };
        let Some(byok) = self.byok.upgrade() else {
            return Flow::Stop;
        };
        let loaded = byok.routing_revision();
        if revisions.byok != loaded {
            tracing::debug!(
                revision = revisions.byok,
                loaded,
                "BYOK changed elsewhere (revision check)"
            );
            if !refresh_byok(&byok, revisions.byok < loaded).await {
                self.verified.forget_all();
                return Flow::Continue;
            }
        }
        if self.api_keys_seen != Some(revisions.api_keys) {
            self.verified.forget_all();
            self.api_keys_seen = Some(revisions.api_keys);
        }
        byok.confirm_view_until(started + self.config.check_interval + CONFIRMATION_GRACE);
        if std::mem::take(&mut self.check_failing) {
            tracing::info!("the stored revisions are readable again; serving");
        }
        Flow::Continue
    }

    /// A notification (or a new session): refreshes what it names.
    async fn refresh(&mut self, change: Change) -> Flow {
        if matches!(change, Change::ApiKeys | Change::Unknown) {
            self.verified.forget_all();
        }
        if matches!(change, Change::Byok | Change::Unknown) {
            let Some(byok) = self.byok.upgrade() else {
                return Flow::Stop;
            };
            refresh_byok(&byok, false).await;
        }
        Flow::Continue
    }
}

/// What an event asks of the worker.
enum Step {
    Check,
    Refresh(Change),
}

enum Flow {
    Continue,
    /// The broker is gone.
    Stop,
}

/// Whether the reload succeeded.
async fn refresh_byok(byok: &Byok, rewound: bool) -> bool {
    match byok.refresh_from_store(rewound).await {
        Ok(()) => true,
        Err(e) => {
            // Tenant CMKs' DEKs were purged; the next revision check tries again.
            tracing::warn!(error = %e, "cannot reload BYOK routing after another broker's change");
            false
        }
    }
}
