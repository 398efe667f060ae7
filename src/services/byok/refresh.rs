//! Another broker on the same database changed BYOK state: this process reloads its routing view
//! and purges the cached DEKs of every CMK it could serve before but may not now (disabled,
//! unavailable, deleted), as a local revocation does. Retirement and rotation purge nothing:
//! objects under those CMKs stay readable through them, here as on the broker that changed them.

use super::Byok;
use crate::error::Error;
use crate::keyring::bindings::BindingSet;

impl Byok {
    /// The store revision of the routing view this process serves from.
    pub fn routing_revision(&self) -> u64 {
        self.keyring.bindings().revision()
    }

    /// The routing view was found current by a revision check: trusted until `until` (after
    /// which the keyring refuses every key resolution until the next confirmation).
    pub fn confirm_view_until(&self, until: std::time::Instant) {
        self.keyring.confirm_view_until(until);
    }

    /// Reloads the routing view from the store and purges what it revoked. When the reload fails
    /// the view may be stale, so every tenant CMK's cached DEKs are purged (fail closed: the
    /// next read asks KMS, which enforces the tenant's own state) and the error is returned.
    /// `rewound`: the stored revision was seen below the loaded one (see
    /// [`Self::reload_bindings_rewound`]).
    pub async fn refresh_from_store(&self, rewound: bool) -> Result<(), Error> {
        let before = self.keyring.bindings();
        let reloaded = if rewound {
            self.reload_bindings_rewound().await.map(|replaced| {
                if replaced {
                    tracing::warn!(
                        loaded = before.revision(),
                        "the stored BYOK revision went backwards (a database restored from a backup?): the routing view was replaced by the stored one"
                    );
                }
            })
        } else {
            self.reload_bindings().await
        };
        let after = self.keyring.bindings();
        for binding in before.all() {
            for kek in &binding.record.keks {
                if reloaded.is_err() || !servable(&after, &kek.key_arn) {
                    self.dek_cache.purge_kek(&kek.key_arn).await;
                }
            }
        }
        reloaded
    }
}

/// Whether `view` lets a cached DEK under `key_arn` be served: its binding still exists, is not
/// disabled by an admin, and the CMK is available.
fn servable(view: &BindingSet, key_arn: &str) -> bool {
    view.owner_of(key_arn).is_some_and(|binding| {
        !binding.record.admin_disabled && binding.kek(key_arn).is_some_and(|kek| kek.available)
    })
}
