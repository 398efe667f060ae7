//! The platform-KEK half of the key-state watcher. Only platform KEKs with DEKs in the cache can
//! serve without asking KMS, so each pass checks those (and those already marked unavailable, to
//! notice recovery). One found disabled, pending deletion or gone is marked unavailable and its
//! DEKs purged; requests are then refused (403 `key_unavailable`); transient errors change nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use futures_util::StreamExt;
use serde_json::json;

use super::Byok;
use crate::audit;
use crate::kms::{KekRef, KmsErrorClass, KmsFailure};

/// Platform KEKs KMS reported unusable, with the failure a request meeting them reports.
#[derive(Default)]
pub struct PlatformKekStates {
    unavailable: RwLock<HashMap<String, KmsFailure>>,
}

impl PlatformKekStates {
    /// The failure to report for `kek_id`, when it is marked unavailable.
    pub fn unavailable(&self, kek_id: &str) -> Option<KmsFailure> {
        let map = self
            .unavailable
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(kek_id).copied()
    }

    fn marked(&self) -> Vec<String> {
        let map = self
            .unavailable
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.keys().cloned().collect()
    }

    /// Records a verdict; true when it changed the state.
    fn set(&self, kek_id: &str, failure: Option<KmsFailure>) -> bool {
        let mut map = self
            .unavailable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(failure) => map.insert(kek_id.to_owned(), failure) != Some(failure),
            None => map.remove(kek_id).is_some(),
        }
    }
}

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
        watched.extend(byok.platform_kek_states.marked());
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
    if !byok.platform_kek_states.set(kek_id, failure) {
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
