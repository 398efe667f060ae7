//! The platform-KEK half of the key-state watcher. Only platform KEKs with DEKs in a cache can
//! serve without asking KMS, so the leader checks those: its own, those other instances report
//! (each reports its cached ones every interval), and those already marked unavailable (to notice
//! recovery). One found disabled, pending deletion or gone is marked unavailable and its DEKs
//! purged; requests are then refused (403 `key_unavailable`); transient errors change nothing.
//! The leader writes each verdict to the store; the other instances apply what is stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::Byok;
use super::watcher::PassTally;
use crate::audit;
use crate::kms::{KekRef, KmsErrorClass, KmsFailure};

/// What DescribeKey says about a platform KEK: `Some(None)` usable, `Some(Some(f))` unusable,
/// `None` unknown (a transient failure: change nothing).
async fn verdict(byok: &Byok, kek_id: &str) -> Option<Option<KmsFailure>> {
    match byok.provider().describe(&KekRef::platform(kek_id)).await {
        Ok(d) if d.enabled => Some(None),
        Ok(d) if d.state.eq_ignore_ascii_case("disabled") => Some(Some(KmsFailure::KeyDisabled)),
        Ok(_) => Some(Some(KmsFailure::KeyPendingDeletionOrInvalidState)),
        Err(e) if e.class() == KmsErrorClass::Revoked => Some(Some(e.failure)),
        Err(e) => {
            tracing::warn!(kek_id, error = %e, "platform KEK check failed transiently; state unchanged");
            None
        }
    }
}

impl Byok {
    /// The leader's pass over the platform KEKs that could serve from a cache; returns how many
    /// were checked.
    pub async fn check_platform_keks(&self, concurrency: usize) -> PassTally {
        let byok = self;
        let bindings = byok.keyring.bindings();
        let mut watched: BTreeSet<String> = byok.dek_cache.cached_kek_ids().into_iter().collect();
        watched.extend(byok.keyring.platform_states().marked());
        match byok.store.watched_platform_keks().await {
            Ok(reported) => watched.extend(reported),
            // Its own cache is still checked; the others' wait for the next pass.
            Err(e) => {
                tracing::warn!(error = %e, "could not read the platform KEKs other instances cache")
            }
        }
        watched.retain(|id| bindings.owner_of(id).is_none());
        let checked = watched.len();
        let answered = AtomicUsize::new(0);
        let answered = &answered;
        futures_util::stream::iter(watched)
            .for_each_concurrent(concurrency.max(1), |kek_id| async move {
                if let Some(failure) = verdict(byok, &kek_id).await {
                    answered.fetch_add(1, Ordering::Relaxed);
                    byok.metrics.record_key_check(&kek_id, failure.is_none());
                    record(byok, &kek_id, failure).await;
                }
            })
            .await;
        PassTally {
            checked,
            answered: answered.load(Ordering::Relaxed),
        }
    }

    /// Every follower, every interval: reports the platform KEKs it holds DEKs of, so the leader
    /// checks them until `for_at_least` from now.
    pub async fn report_cached_platform_keks(&self, for_at_least: Duration) {
        let bindings = self.keyring.bindings();
        let cached: Vec<String> = self
            .dek_cache
            .cached_kek_ids()
            .into_iter()
            .filter(|id| bindings.owner_of(id).is_none())
            .collect();
        if let Err(e) = self
            .store
            .report_cached_platform_keks(cached, for_at_least)
            .await
        {
            tracing::warn!(error = %e, "could not report cached platform KEKs to the watcher's leader");
        }
    }

    /// A follower's pass: applies the platform KEK states the leader stored. If the store cannot
    /// be read, what is marked stays marked.
    pub async fn follow_platform_keks(&self) {
        let stored = match self.store.platform_kek_failures().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "could not read platform KEK states; unchanged");
                return;
            }
        };
        let stored: HashMap<String, KmsFailure> = stored
            .into_iter()
            // A failure this build cannot name is still a failure: fail closed.
            .map(|(id, name)| {
                let failure = KmsFailure::from_name(&name).unwrap_or(KmsFailure::KeyUnavailable);
                (id, failure)
            })
            .collect();
        let states = self.keyring.platform_states();
        for kek_id in states.marked() {
            if !stored.contains_key(&kek_id) && states.set(&kek_id, None) {
                tracing::info!(
                    kek_id,
                    "platform KEK available again (as the watcher's leader found)"
                );
            }
        }
        for (kek_id, failure) in stored {
            // Marked before the purge, so no request can cache a DEK of this KEK again in between.
            if states.set(&kek_id, Some(failure)) {
                self.dek_cache.purge_kek(&kek_id).await;
                tracing::warn!(
                    kek_id,
                    reason = failure.as_str(),
                    "platform KEK unavailable (as the watcher's leader found)"
                );
            }
        }
    }
}

/// The leader's verdict: stored for the other instances, then applied here (and audited once,
/// by the leader).
async fn record(byok: &Byok, kek_id: &str, failure: Option<KmsFailure>) {
    if let Err(e) = byok
        .store
        .record_platform_kek_state(kek_id, failure.map(|f| f.as_str().to_owned()))
        .await
    {
        tracing::error!(kek_id, error = %e, "could not store a platform KEK state for the other instances");
    }
    // Marked before the purge, so no request can cache a DEK of this KEK again in between.
    if !byok.keyring.platform_states().set(kek_id, failure) {
        return;
    }
    let reason = failure.map(KmsFailure::as_str);
    if failure.is_some() {
        byok.dek_cache.purge_kek(kek_id).await;
        byok.metrics.record_revocation("kms");
    }
    let state = if failure.is_some() {
        "unavailable"
    } else {
        "available"
    };
    tracing::warn!(kek_id, state, reason, "platform KEK changed state");
    let fields = json!({"key_id": kek_id, "state": state, "reason": reason});
    if let Err(e) = byok
        .audit
        .record(audit::event(None, "vault.kek.state_changed", None, fields))
        .await
    {
        tracing::error!(kek_id, error = %e, "could not audit a platform KEK state change");
    }
}
