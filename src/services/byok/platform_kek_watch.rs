//! The platform-KEK half of the key-state watcher. Only platform KEKs with DEKs in the cache can
//! serve without asking KMS, so each pass checks those (and those already marked unavailable, to
//! notice recovery). One found disabled, pending deletion or gone is marked unavailable and its
//! DEKs purged; requests are then refused (403 `key_unavailable`); transient errors change nothing.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use serde_json::json;

use super::Byok;
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
    /// One pass over the platform KEKs that could serve from the cache; returns how many were checked.
    pub async fn check_platform_keks(&self, concurrency: usize) -> usize {
        let byok = self;
        let bindings = byok.keyring.bindings();
        let mut watched: BTreeSet<String> = byok
            .dek_cache
            .cached_kek_ids()
            .into_iter()
            .filter(|id| bindings.owner_of(id).is_none())
            .collect();
        watched.extend(byok.keyring.platform_states().marked());
        let count = watched.len();
        futures_util::stream::iter(watched)
            .for_each_concurrent(concurrency.max(1), |kek_id| async move {
                if let Some(failure) = verdict(byok, &kek_id).await {
                    byok.metrics.record_key_check(&kek_id, failure.is_none());
                    record(byok, &kek_id, failure).await;
                }
            })
            .await;
        count
    }
}

async fn record(byok: &Byok, kek_id: &str, failure: Option<KmsFailure>) {
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
