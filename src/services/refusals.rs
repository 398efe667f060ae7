//! Requests refused before they reach a use case — no or an unknown API key, a revoked key, a key
//! of the wrong role, a key over its rate limit — recorded as `vault.access.denied` events with a
//! `count`, coalesced per second.
//!
//! Why coalesced: anyone can send these, as fast as the network allows, and each costs the broker
//! nothing else (no key, no data, no KMS call). Recording each as a durable event before its 401
//! would let an anonymous flood turn the audit writer into the bottleneck of every tenant's reads.
//! So a refusal only increments a counter in memory (a lock and a map entry), and once a second
//! the counters become events: one per (reason, method, route, source address, presented key or
//! credential kind) with `count`, `first_at` and `last_at`. Nothing is dropped: the map is bounded
//! (past [`MAX_TALLIES`] distinct entries in one second, new sources are counted together under
//! `source: null, sources_merged: true`), a flush whose events cannot be committed puts its
//! counts back for the next one, the audit writer's backpressure slows the flush (not the
//! requests), and shutdown flushes before the audit writer stops. What this gives up: a refusal
//! is answered before its count is durable, so a crash loses at most the last second of counts.
//! Refusals of authenticated requests (scope, key state, bad blobs) are recorded per request,
//! durably, by the vault service (`services::vault::refusals`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{self, AuditLog};
use crate::auth::{Principal, Rejection};
use crate::error::ErrorCode;
use crate::store::AuditEvent;
use crate::supervisor::{Stage, Supervisor};
use crate::timestamp::Timestamp;

/// How often counted refusals become events.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Distinct entries kept per interval before sources are merged.
const MAX_TALLIES: usize = 4096;

/// Where a refused request came from and what it asked for.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The request method (standard methods only; anything else is `other`).
    pub method: &'static str,
    /// The matched route template (never the raw path, which may carry names), or `unmatched`.
    pub route: String,
    /// The connection's peer address, when the server knows it.
    pub source: Option<IpAddr>,
}

/// Who was refused: a key the broker knows (by id and name), or only the kind of credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Presented {
    /// No credential, or a token matching no key: `none`, `bkb_app`, `bkb_admin`, `other`.
    Credential(&'static str),
    Key {
        id: String,
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    reason: &'static str,
    code: ErrorCode,
    method: &'static str,
    route: String,
    source: Option<IpAddr>,
    sources_merged: bool,
    presented: Presented,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first_at: Timestamp,
    last_at: Timestamp,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.count += other.count;
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
    }
}

/// The counts of the current interval, bounded (see the module comment).
#[derive(Default)]
struct Counter {
    tallies: Mutex<HashMap<Key, Tally>>,
}

impl Counter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Tally>> {
        // The critical sections cannot panic; a poisoned lock still holds consistent counts.
        self.tallies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, mut key: Key, at: Timestamp) {
        let mut tallies = self.lock();
        if tallies.len() >= MAX_TALLIES && !tallies.contains_key(&key) {
            key.source = None;
            key.sources_merged = true;
        }
        let tally = Tally {
            count: 1,
            first_at: at,
            last_at: at,
        };
        tallies
            .entry(key)
            .and_modify(|t| t.merge(tally))
            .or_insert(tally);
    }

    fn take(&self) -> HashMap<Key, Tally> {
        std::mem::take(&mut *self.lock())
    }

    /// Counts a flush could not commit, merged into the current interval's.
    fn put_back(&self, key: Key, tally: Tally) {
        self.lock()
            .entry(key)
            .and_modify(|t| t.merge(tally))
            .or_insert(tally);
    }
}

/// The refusal counters and their flush; clones share them.
#[derive(Clone)]
pub struct Refusals {
    counter: Arc<Counter>,
    audit: AuditLog,
}

impl Refusals {
    /// Hands the once-a-second flush to `supervisor` (its workers stage, which stops before the
    /// audit writer: the last counts are committed at shutdown).
    pub fn start(audit: AuditLog, supervisor: &Supervisor) -> Self {
        let refusals = Self {
            counter: Arc::default(),
            audit,
        };
        let flushing = refusals.clone();
        supervisor.spawn(Stage::Workers, "refusal counts", move |stop| {
            flushing.run(stop)
        });
        refusals
    }

    /// Counts a request whose bearer token was not accepted.
    pub fn rejected(&self, origin: &Origin, rejection: &Rejection) {
        if let Some(key) = rejection_key(origin, rejection) {
            self.counter.count(key, Timestamp::now());
        }
    }

    /// Counts a request by a valid key refused at the door: `wrong_role` or `rate_limited`.
    pub fn refused(&self, origin: &Origin, reason: &'static str, code: ErrorCode, key: &Principal) {
        let presented = Presented::Key {
            id: key.key_id.clone(),
            name: key.name.clone(),
        };
        self.counter
            .count(key_of(origin, reason, code, presented), Timestamp::now());
    }

    /// Turns the counts so far into events and returns once they are committed (or, when they
    /// cannot be, put back for the next flush).
    pub async fn flush(&self) {
        let taken = self.counter.take();
        if taken.is_empty() {
            return;
        }
        let records = taken.iter().map(|(key, tally)| {
            let audit = self.audit.clone();
            let event = event_of(key, tally);
            async move { audit.record(event).await }
        });
        let outcomes = futures_util::future::join_all(records).await;
        let mut failed = 0;
        for ((key, tally), outcome) in taken.into_iter().zip(outcomes) {
            if let Err(e) = outcome {
                if failed == 0 {
                    tracing::error!(error = %e, "refusal counts not committed; kept for the next flush");
                }
                failed += 1;
                self.counter.put_back(key, tally);
            }
        }
    }

    async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            self.flush().await;
        }
        self.flush().await;
    }
}

fn key_of(origin: &Origin, reason: &'static str, code: ErrorCode, presented: Presented) -> Key {
    Key {
        reason,
        code,
        method: origin.method,
        route: origin.route.clone(),
        source: origin.source,
        sources_merged: false,
        presented,
    }
}

fn rejection_key(origin: &Origin, rejection: &Rejection) -> Option<Key> {
    let (reason, presented) = match rejection {
        Rejection::NoCredential => ("unauthorized", Presented::Credential("none")),
        Rejection::UnknownToken { kind } => ("unauthorized", Presented::Credential(kind)),
        Rejection::Revoked { key_id, name } => (
            "api_key_revoked",
            Presented::Key {
                id: key_id.clone(),
                name: name.clone(),
            },
        ),
        // The key store failed: the caller was not refused, the broker was unable.
        Rejection::Failed(_) => return None,
    };
    Some(key_of(origin, reason, ErrorCode::Unauthorized, presented))
}

fn event_of(key: &Key, tally: &Tally) -> AuditEvent {
    let mut fields = json!({
        "reason": key.reason,
        "code": key.code.as_str(),
        "method": key.method,
        "route": key.route,
        "source": key.source.map(|ip| ip.to_string()),
        "count": tally.count,
        "first_at": tally.first_at.to_rfc3339(),
        "last_at": tally.last_at.to_rfc3339(),
    });
    if key.sources_merged {
        fields["sources_merged"] = json!(true);
    }
    match &key.presented {
        Presented::Credential(kind) => fields["credential"] = json!(kind),
        Presented::Key { id, name } => {
            fields["actor_id"] = json!(id);
            fields["actor_source"] = json!("api");
            fields["actor_name"] = json!(name);
        }
    }
    audit::event(None, "vault.access.denied", None, fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(source: u8) -> Origin {
        Origin {
            method: "GET",
            route: "/vault/v1/kv".into(),
            source: Some(IpAddr::from([10, 0, 0, source])),
        }
    }

    fn count(counter: &Counter, origin: &Origin, rejection: &Rejection) {
        if let Some(key) = rejection_key(origin, rejection) {
            counter.count(key, Timestamp::now());
        }
    }

    #[test]
    fn refusals_of_one_kind_from_one_source_are_one_count() {
        let counter = Counter::default();
        for _ in 0..3 {
            count(&counter, &origin(1), &Rejection::NoCredential);
        }
        count(&counter, &origin(2), &Rejection::NoCredential);
        count(
            &counter,
            &origin(1),
            &Rejection::UnknownToken { kind: "bkb_app" },
        );
        let failed = Rejection::Failed(crate::error::Error::Internal("db".into()));
        count(&counter, &origin(1), &failed);
        let mut counts: Vec<u64> = counter.take().values().map(|t| t.count).collect();
        counts.sort();
        assert_eq!(counts, [1, 1, 3]);
        assert!(counter.take().is_empty());
    }

    #[test]
    fn past_the_bound_sources_are_merged_not_dropped() {
        let counter = Counter::default();
        for i in 0..MAX_TALLIES + 10 {
            let origin = Origin {
                source: Some(IpAddr::from((i as u32).to_be_bytes())),
                ..origin(0)
            };
            count(&counter, &origin, &Rejection::NoCredential);
        }
        let tallies = counter.take();
        assert_eq!(tallies.len(), MAX_TALLIES + 1);
        let merged: Vec<_> = tallies.iter().filter(|(k, _)| k.sources_merged).collect();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].1.count, 10);
        assert_eq!(merged[0].0.source, None);
        let total: u64 = tallies.values().map(|t| t.count).sum();
        assert_eq!(total, (MAX_TALLIES + 10) as u64);
    }

    #[test]
    fn counts_put_back_after_a_failed_flush_add_up() {
        let counter = Counter::default();
        count(&counter, &origin(1), &Rejection::NoCredential);
        let taken = counter.take();
        count(&counter, &origin(1), &Rejection::NoCredential);
        for (key, tally) in taken {
            counter.put_back(key, tally);
        }
        let tallies = counter.take();
        assert_eq!(tallies.len(), 1);
        assert_eq!(tallies.values().next().unwrap().count, 2);
    }

    #[test]
    fn an_event_names_the_key_or_the_credential_kind_never_a_token() {
        let key = Key {
            reason: "api_key_revoked",
            code: ErrorCode::Unauthorized,
            method: "POST",
            route: "/vault/v1/kv".into(),
            source: None,
            sources_merged: false,
            presented: Presented::Key {
                id: "key_1".into(),
                name: "ci".into(),
            },
        };
        let now = Timestamp::now();
        let tally = Tally {
            count: 2,
            first_at: now,
            last_at: now,
        };
        let data: serde_json::Value =
            serde_json::from_str(&event_of(&key, &tally).data_json).unwrap();
        assert_eq!(data["actor_id"], "key_1");
        assert_eq!(data["count"], 2);
        assert_eq!(data["reason"], "api_key_revoked");
        let anonymous = Key {
            presented: Presented::Credential("bkb_app"),
            ..key
        };
        let data: serde_json::Value =
            serde_json::from_str(&event_of(&anonymous, &tally).data_json).unwrap();
        assert_eq!(data["credential"], "bkb_app");
        assert!(data.get("actor_id").is_none());
    }
}
