//! Readiness (`GET /readyz`), dependency by dependency: the database, the key provider, and where
//! several brokers share a PostgreSQL database, the routing view's confirmation and the change
//! notification channel. Each check has a bounded time; a check that fails gives a short reason
//! meant for an unauthenticated caller (a load balancer): the detail goes to the log, never to
//! the answer. The notification channel is reported but not required: while it is down the
//! revision check keeps the view current within the published bound, so the broker still serves.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long each check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DependencyCheck {
    /// `database`, `key_provider`, `routing_view` or `notifications`.
    pub name: &'static str,
    pub ready: bool,
    /// False for a dependency whose loss degrades the broker without stopping it.
    pub required: bool,
    /// Why it is not ready (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DependencyCheck {
    fn ready(name: &'static str, required: bool) -> Self {
        Self {
            name,
            ready: true,
            required,
            reason: None,
        }
    }

    fn failed(name: &'static str, required: bool, reason: impl Into<String>) -> Self {
        Self {
            name,
            ready: false,
            required,
            reason: Some(reason.into()),
        }
    }
}

/// Every dependency's state; ready when every required one is.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub checks: Vec<DependencyCheck>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ready || !c.required)
    }
}

/// Runs `check` within [`CHECK_TIMEOUT`]. A failure's own text is logged (it may name hosts or
/// internal state); the answer only says that the check failed or did not answer in time.
pub async fn bounded<F, E>(name: &'static str, required: bool, check: F) -> DependencyCheck
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    bounded_within(CHECK_TIMEOUT, name, required, check).await
}

async fn bounded_within<F, E>(
    limit: Duration,
    name: &'static str,
    required: bool,
    check: F,
) -> DependencyCheck
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => DependencyCheck::ready(name, required),
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            DependencyCheck::failed(
                name,
                required,
                format!("{name} check failed (see the broker's log)"),
            )
        }
        Err(_) => {
            tracing::warn!(dependency = name, "readiness check timed out");
            DependencyCheck::failed(
                name,
                required,
                format!("no answer within {} ms", limit.as_millis()),
            )
        }
    }
}

/// The routing view's check: `Err` carries the keyring's refusal.
pub fn routing_view(trusted: Result<(), impl std::fmt::Display>) -> DependencyCheck {
    match trusted {
        Ok(()) => DependencyCheck::ready("routing_view", true),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the routing view is not confirmed");
            DependencyCheck::failed(
                "routing_view",
                true,
                "the revision check has not confirmed the key routing in time; key requests are refused",
            )
        }
    }
}

/// The change listener's state, kept by the coherence worker and read by readiness.
#[derive(Debug, Default)]
pub struct ListenerHealth {
    state: Mutex<ListenerState>,
}

#[derive(Debug, Default, Clone)]
enum ListenerState {
    #[default]
    Connecting,
    Listening,
    Down {
        since: Instant,
    },
}

impl ListenerHealth {
    pub fn listening(&self) {
        *self.lock() = ListenerState::Listening;
    }

    /// The session was lost or could not open; the first failure's time is kept.
    pub fn down(&self) {
        let mut state = self.lock();
        if !matches!(*state, ListenerState::Down { .. }) {
            *state = ListenerState::Down {
                since: Instant::now(),
            };
        }
    }

    pub fn check(&self) -> DependencyCheck {
        const NAME: &str = "notifications";
        match self.lock().clone() {
            ListenerState::Listening => DependencyCheck::ready(NAME, false),
            ListenerState::Connecting => {
                DependencyCheck::failed(NAME, false, "the change listener is connecting")
            }
            ListenerState::Down { since } => DependencyCheck::failed(
                NAME,
                false,
                format!(
                    "the change listener has been down for {} s; the revision check keeps the view current within its bound",
                    since.elapsed().as_secs()
                ),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ListenerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_or_slow_check_gives_a_reason_without_the_error_text() {
        let failed = bounded("database", true, async { Err::<(), _>("password=hunter2") }).await;
        assert!(!failed.ready);
        assert!(
            !failed
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("hunter2")
        );
        let slow = bounded_within(Duration::from_millis(20), "key_provider", true, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<(), String>(())
        })
        .await;
        assert_eq!(slow.reason.as_deref(), Some("no answer within 20 ms"));
    }

    #[test]
    fn only_required_dependencies_decide_readiness() {
        let health = ListenerHealth::default();
        health.down();
        let mut readiness = Readiness {
            checks: vec![DependencyCheck::ready("database", true), health.check()],
        };
        assert!(
            readiness.is_ready(),
            "a lost listener degrades, it does not stop"
        );
        readiness
            .checks
            .push(DependencyCheck::failed("key_provider", true, "down"));
        assert!(!readiness.is_ready());
        health.listening();
        assert!(health.check().ready);
    }
}
