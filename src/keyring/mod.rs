//! Context → KEK resolution. A context covered by a BYOK binding uses that binding's CMK, or is
//! refused while the binding is disabled or unavailable (fail closed). Platform KEKs are created just in time: the first use of a context
//! creates one KMS key and an alias derived from the context hash; later uses find the alias.
//! Concurrent first uses converge on one key: in-process through single flight, across processes
//! through the alias (CreateAlias fails for all but one creator; losers schedule their key for
//! deletion and use the winner's). The operator's selector fields choose which context pairs name
//! a platform KEK, and creation is limited per API key per hour and in total (`platform_kek`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub mod bindings;
mod error_mapping;
mod freshness;
mod platform;
mod platform_states;
mod revocation_clock;

pub use freshness::ViewFreshness;
pub use platform_states::PlatformKekStates;
pub use revocation_clock::RevocationClock;

use crate::context::{ContextHash, KeyContext};
use crate::kms::{KekRef, KeyProvider, KmsError};
use crate::platform_kek::{self, CreationQuota, KekCreator};
use crate::store::{KekCreationRefused, StoreError};
use bindings::{Binding, BindingSet, BindingState, kek_ref};

/// Attempts to read back an alias another creator just won; covers its brief write window.
const ALIAS_READBACK_ATTEMPTS: u32 = 5;

/// Why a KEK may not be used for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyAccessError {
    /// The tenant's BYOK key is disabled in the broker.
    Revoked { byok_key_id: String },
    /// The tenant's CMK is unavailable (disabled, pending deletion, access removed in AWS).
    Unavailable { reason: String },
    /// Resolving a platform KEK failed in KMS.
    Kms(KmsError),
    /// The named KEK is not one the broker holds for this context (another context's or tenant's
    /// key, a deleted registration's, a key the broker never made, or garbage). Deliberately
    /// carries nothing, so every such refusal looks the same whatever the named key is.
    NotHeldForContext,
    /// The context lacks a field that selects its platform KEK.
    MissingSelectorField { field: String },
    /// Creating the context's platform KEK would exceed a creation limit.
    CreationRefused(KekCreationRefused),
    /// The store could not check or record a creation (full, unavailable, or failed).
    Store(StoreError),
}

/// The KEK for a write, and the alias of the platform KEK resolving it created just now (if so).
#[derive(Debug, Clone)]
pub struct WriteKek {
    pub kek: KekRef,
    pub created_alias: Option<String>,
}

/// Names the context on the request's span (its hash: the request log line's `context_hash`);
/// outside a request (rewrap, the watcher) no span declares the field and nothing is recorded.
fn record_context(context: &KeyContext) {
    let span = tracing::Span::current();
    if span.has_field("context_hash") {
        span.record("context_hash", context.hash().to_hex().as_str());
    }
}

fn check_state(binding: &Binding) -> Result<(), KeyAccessError> {
    match binding.state() {
        BindingState::Active | BindingState::Retired => Ok(()),
        BindingState::Disabled => Err(KeyAccessError::Revoked {
            byok_key_id: binding.id().to_owned(),
        }),
        BindingState::Unavailable(reason) => Err(KeyAccessError::Unavailable { reason }),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyringStats {
    pub keks_created: u64,
    pub orphans_scheduled_for_deletion: u64,
}

#[derive(Default)]
struct Counters {
    keks_created: AtomicU64,
    orphans: AtomicU64,
}

pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    /// BYOK bindings: replaced whole on every change, read without locks by every request.
    bindings: watch::Sender<Arc<BindingSet>>,
    alias_prefix: String,
    /// Resolved platform KEK ids by selection hash. A selection's KEK never changes, so entries are
    /// never stale; they leave only when idle for a day, to bound memory.
    resolved: moka::future::Cache<ContextHash, Arc<str>>,
    /// Whether a platform KEK the store recorded belongs to a context (by KEK id and context
    /// hash): a KEK's selection never changes, so the verdict never does. Spares the hot read path
    /// a database read and the subset hashing for data made under an earlier selector.
    held_verdicts: moka::future::Cache<(Arc<str>, ContextHash), bool>,
    /// Platform KEKs the watcher found unusable: refused here, so no caller can bypass them.
    platform_states: Arc<PlatformKekStates>,
    /// Whether the BYOK view may still be trusted (several brokers on one database).
    freshness: ViewFreshness,
    /// Times revocations from the view that shows them to the first request refused.
    revocations: RevocationClock,
    counters: Counters,
    /// Context names selecting a platform KEK; `None`: the whole context.
    selector_fields: Option<Vec<String>>,
    /// Creation limits; `None` (tests of the keyring alone): unlimited.
    quota: Option<CreationQuota>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid KEK alias prefix {0:?}: use 1-100 characters of [A-Za-z0-9/_-], not starting with 'aws'"
)]
pub struct AliasPrefixError(pub String);

impl Keyring {
    /// `alias_prefix` namespaces this deployment's aliases: `alias/<prefix>/ctx-<context hash>`.
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        alias_prefix: &str,
    ) -> Result<Self, AliasPrefixError> {
        validate_alias_prefix(alias_prefix)?;
        Ok(Self {
            provider,
            alias_prefix: alias_prefix.trim_matches('/').to_owned(),
            resolved: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            held_verdicts: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            platform_states: Arc::default(),
            freshness: ViewFreshness::default(),
            revocations: RevocationClock::default(),
            counters: Counters::default(),
            bindings: watch::Sender::new(Arc::new(BindingSet::default())),
            selector_fields: None,
            quota: None,
        })
    }

    /// Applies the operator's platform KEK policy: selector fields and creation limits.
    pub fn with_platform_policy(
        mut self,
        selector_fields: Option<Vec<String>>,
        quota: CreationQuota,
    ) -> Self {
        self.selector_fields = selector_fields;
        self.quota = Some(quota);
        self
    }

    /// The pairs of `context` that select its platform KEK (all of them without a selector).
    pub fn platform_selection(&self, context: &KeyContext) -> Result<KeyContext, KeyAccessError> {
        platform_kek::select(self.selector_fields.as_deref(), context)
            .map_err(|field| KeyAccessError::MissingSelectorField { field })
    }

    /// The current BYOK bindings.
    pub fn bindings(&self) -> Arc<BindingSet> {
        Arc::clone(&self.bindings.borrow())
    }

    /// Installs a view of the BYOK bindings unless the current one was read at a later revision
    /// (a slow reload finishing after a newer one must not undo, say, an admin disable: that
    /// would fail open). Equal revisions read the same stored state. Returns true if installed.
    pub fn install_bindings(&self, set: BindingSet) -> bool {
        self.bindings.send_if_modified(|current| {
            if set.revision() < current.revision() {
                return false;
            }
            self.revocations.observe(current, &set);
            *current = Arc::new(set);
            true
        })
    }

    /// A binding's state as a request sees it: refusing (disabled, unavailable) is an error, and
    /// the first refusal since the view showed it is timed.
    fn check_state(&self, binding: &Binding) -> Result<(), KeyAccessError> {
        let checked = check_state(binding);
        if checked.is_err() {
            self.revocations.refused(binding.id());
        }
        checked
    }

    /// The revocation timing and state change counts, for metrics.
    pub fn revocation_clock(&self) -> &RevocationClock {
        &self.revocations
    }

    /// Whether key resolutions are served now: refused once the view's last confirmation ran out.
    pub fn view_trusted(&self) -> Result<(), StoreError> {
        self.freshness.check()
    }

    /// The coherence worker confirmed the BYOK view current; it is trusted until `until`.
    pub fn confirm_view_until(&self, until: std::time::Instant) {
        self.freshness.confirm_until(until);
    }

    /// Installs `set` whatever its revision, if the current view is still `seen`: only for a
    /// database whose revision went backwards (restored from a backup), where the guard of
    /// [`Self::install_bindings`] would keep the newer-numbered, now fictional, view forever. A
    /// view another reload installed meanwhile is newer than `set`, and stays.
    pub fn replace_bindings(&self, seen: &Arc<BindingSet>, set: BindingSet) -> bool {
        self.bindings.send_if_modified(|current| {
            if !Arc::ptr_eq(current, seen) {
                return false;
            }
            self.revocations.observe(current, &set);
            *current = Arc::new(set);
            true
        })
    }

    /// The KEK a new DEK for `context` is wrapped under. A context a BYOK binding covers gets that
    /// binding's current CMK or a refusal, never a platform KEK (fail closed).
    /// `creator` pays for a platform KEK this call creates (see [`KekCreator`]).
    pub async fn kek_for_write(
        &self,
        context: &KeyContext,
        creator: KekCreator<'_>,
    ) -> Result<WriteKek, KeyAccessError> {
        record_context(context);
        self.freshness.check().map_err(KeyAccessError::Store)?;
        let bindings = self.bindings();
        if let Some(binding) = bindings.covering(context) {
            self.check_state(binding)?;
            let kek = binding
                .current_kek()
                .ok_or_else(|| KeyAccessError::Unavailable {
                    reason: "current_key_missing".into(),
                })?;
            return Ok(WriteKek {
                kek: kek_ref(kek),
                created_alias: None,
            });
        }
        let selection = self.platform_selection(context)?;
        let (kek, created) = self.resolve_platform_kek(&selection, creator).await?;
        refuse_unavailable(&self.platform_states, &kek.key_id)?;
        Ok(WriteKek {
            kek,
            created_alias: created.then(|| self.alias_for(&selection)),
        })
    }

    /// How to reach the KEK a stored DEK was wrapped under. The id is checked first: it must be a
    /// KEK the broker holds for `context` (a CMK of a registration whose selector the context
    /// contains, current or earlier, retired or not; or the platform KEK of this very context,
    /// looked up, never created), else `NotHeldForContext` before any data-plane KMS call. Then the
    /// revocation checks: a context covered by a disabled or unavailable binding is refused
    /// whatever key wrapped it.
    pub async fn kek_for_read(
        &self,
        stored_kek_id: &str,
        context: &KeyContext,
    ) -> Result<KekRef, KeyAccessError> {
        record_context(context);
        self.freshness.check().map_err(KeyAccessError::Store)?;
        let bindings = self.bindings();
        let owner = bindings.owner_of(stored_kek_id);
        let held = match owner {
            Some(owner) if owner.selects(context) => true,
            // Another registration's CMK takes the same path as an unknown id (the platform
            // lookup), so neither the answer nor its timing tells the two apart.
            _ => {
                let platform = self.is_platform_kek_of(context, stored_kek_id).await?;
                owner.is_none() && platform
            }
        };
        if !held {
            return Err(KeyAccessError::NotHeldForContext);
        }
        if let Some(binding) = bindings.covering(context) {
            self.check_state(binding)?;
        }
        let Some(owner) = owner else {
            refuse_unavailable(&self.platform_states, stored_kek_id)?;
            return Ok(KekRef::platform(stored_kek_id));
        };
        if owner.record.admin_disabled {
            self.revocations.refused(owner.id());
            return Err(KeyAccessError::Revoked {
                byok_key_id: owner.id().to_owned(),
            });
        }
        let kek = owner
            .kek(stored_kek_id)
            .ok_or_else(|| KeyAccessError::Unavailable {
                reason: "key_missing".into(),
            })?;
        if !kek.available {
            self.revocations.refused(owner.id());
            return Err(KeyAccessError::Unavailable {
                reason: kek
                    .reason
                    .clone()
                    .unwrap_or_else(|| "key_unavailable".into()),
            });
        }
        Ok(kek_ref(kek))
    }

    /// The platform KEKs marked unusable; the key-state watcher updates them.
    pub fn platform_states(&self) -> &Arc<PlatformKekStates> {
        &self.platform_states
    }

    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// The alias naming the platform KEK that `selection` (see [`Self::platform_selection`]) selects.
    pub fn alias_for(&self, selection: &KeyContext) -> String {
        format!(
            "alias/{}/ctx-{}",
            self.alias_prefix,
            selection.hash().to_hex()
        )
    }

    /// The platform KEK for `context` (selected by the operator's fields), created on first use by
    /// the broker itself.
    pub async fn platform_kek(&self, context: &KeyContext) -> Result<KekRef, KeyAccessError> {
        let selection = self.platform_selection(context)?;
        self.resolve_platform_kek(&selection, KekCreator::Broker)
            .await
            .map(|(kek, _)| kek)
    }

    /// The automatic rotation period platform KEKs get (the configured one; 365 days without).
    pub fn rotation_period_days(&self) -> u32 {
        self.quota.as_ref().map_or(
            platform_kek::PlatformKekConfig::default().rotation_period_days,
            CreationQuota::rotation_period_days,
        )
    }

    pub fn stats(&self) -> KeyringStats {
        KeyringStats {
            keks_created: self.counters.keks_created.load(Ordering::Relaxed),
            orphans_scheduled_for_deletion: self.counters.orphans.load(Ordering::Relaxed),
        }
    }
}

/// A platform KEK the watcher marked unusable fails closed like a revoked tenant key.
fn refuse_unavailable(states: &PlatformKekStates, kek_id: &str) -> Result<(), KeyAccessError> {
    match states.unavailable(kek_id) {
        Some(failure) => Err(KeyAccessError::Unavailable {
            reason: failure.as_str().to_owned(),
        }),
        None => Ok(()),
    }
}

fn validate_alias_prefix(prefix: &str) -> Result<(), AliasPrefixError> {
    let trimmed = prefix.trim_matches('/');
    let valid = !trimmed.is_empty()
        && trimmed.len() <= 100
        && !trimmed.starts_with("aws")
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(AliasPrefixError(prefix.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::validate_alias_prefix;

    #[test]
    fn alias_prefixes_follow_kms_alias_rules() {
        assert!(validate_alias_prefix("byok-broker").is_ok());
        assert!(validate_alias_prefix("byok-broker/prod_eu").is_ok());
        for bad in ["", "/", "aws/x", "has space", "dot.ted", &"x".repeat(101)] {
            assert!(validate_alias_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
