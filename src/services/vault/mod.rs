//! Vault use cases (objects and data keys): the only code combining keyring, DEK cache, store and
//! envelope. Every object version gets a fresh DEK under its context's current KEK; the key
//! context of an object never changes; scope checks happen before any KMS call. This file holds
//! the shared pieces; `objects.rs` and `data_keys.rs` the use cases.

pub mod cursor;
mod data_keys;
mod idempotency;
mod objects;
mod refusals;

pub use crate::store::{ListQuery, ListedObject, Order, VersionRecord};
pub use idempotency::{IdempotencyRequest, IdempotentOutcome};
use objects::IdempotentCreate;
use refusals::Attempt;

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit::{self, AuditLog};
use crate::auth::Principal;
use crate::cache::DekCache;
use crate::config::Limits;
use crate::context::{KeyContext, hex};
use crate::data_key::DataKey;
use crate::envelope::{ValueBinding, WrappedKey, seal_value};
use crate::error::{Error, ErrorCode};
use crate::keyring::{Keyring, WriteKek};
use crate::kms::{KekRef, KeyProvider, KmsError};
use crate::platform_kek::KekCreator;
use crate::services::byok::Byok;
use crate::store::{NewVersion, ObjectRecord, Store};
use crate::timestamp::Timestamp;

pub const MAX_NAME_CHARS: usize = 200;

/// The vault use cases: objects and data keys, for app keys within their scope.
pub struct Vault {
    store: Store,
    keyring: Arc<Keyring>,
    dek_cache: DekCache,
    audit: AuditLog,
    /// Marks a tenant CMK unavailable when a request meets a revoked-class KMS answer.
    byok: Arc<Byok>,
    limits: Limits,
}

/// What the vault service is built from.
pub struct VaultParts {
    pub store: Store,
    pub keyring: Arc<Keyring>,
    pub dek_cache: DekCache,
    pub audit: AuditLog,
    pub byok: Arc<Byok>,
    pub limits: Limits,
}

/// Object metadata as the wire API reports it.
#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub id: String,
    pub name: String,
    pub context: KeyContext,
    pub key_id: String,
    pub version_id: String,
    pub updated_at: String,
    pub updated_by_id: String,
    pub updated_by_name: String,
}

pub struct ObjectWithValue {
    pub meta: ObjectMeta,
    pub value: Zeroizing<String>,
}

/// A data key for client-side encryption: plaintext DEK plus its `encrypted_keys` blob.
pub struct IssuedDataKey {
    pub dek_id: Uuid,
    pub context: KeyContext,
    pub key: Arc<DataKey>,
    pub encrypted_keys: Vec<u8>,
}

fn org(context: &KeyContext) -> Option<&str> {
    context.get("organization_id")
}

fn meta_from_record(record: &ObjectRecord, context: KeyContext) -> ObjectMeta {
    ObjectMeta {
        id: record.id.clone(),
        name: record.name.clone(),
        context,
        key_id: record.kek_id.clone(),
        version_id: record.current_version.clone(),
        updated_at: record.updated_at.clone(),
        updated_by_id: record.updated_by_id.clone(),
        updated_by_name: record.updated_by_name.clone(),
    }
}

impl Vault {
    pub fn new(parts: VaultParts) -> Self {
        Self {
            store: parts.store,
            keyring: parts.keyring,
            dek_cache: parts.dek_cache,
            audit: parts.audit,
            byok: parts.byok,
            limits: parts.limits,
        }
    }

    fn provider(&self) -> &dyn KeyProvider {
        self.keyring.provider().as_ref()
    }

    fn check_value(&self, value: &str) -> Result<(), Error> {
        if value.len() > self.limits.max_value_bytes {
            return Err(Error::invalid(
                ErrorCode::ValueTooLarge,
                format!(
                    "value is {} bytes; at most {} are allowed",
                    value.len(),
                    self.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The KEK for `context`; records `vault.kek.created` when this call created it.
    async fn kek_for(&self, principal: &Principal, context: &KeyContext) -> Result<KekRef, Error> {
        let WriteKek { kek, created_alias } = self
            .keyring
            .kek_for_write(context, KekCreator::ApiKey(&principal.key_id))
            .await?;
        if let Some(alias) = created_alias {
            let fields = json!({"key_name": alias, "key_id": kek.key_id});
            self.audit
                .record(audit::event(
                    Some(principal),
                    "vault.kek.created",
                    org(context),
                    fields,
                ))
                .await?;
        }
        Ok(kek)
    }

    /// Seals `value` for `object_id` under a fresh DEK from the context's current KEK.
    async fn seal_new_version(
        &self,
        principal: &Principal,
        context: &KeyContext,
        object_id: &str,
        value: &str,
    ) -> Result<NewVersion, Error> {
        let kek = self.kek_for(principal, context).await?;
        let generated = self
            .provider()
            .generate_data_key(&kek, context)
            .await
            .map_err(Error::from_kms)?;
        let wrapped = WrappedKey {
            kek_id: generated.kek_id.clone(),
            wrapped: generated.wrapped,
        };
        // The version id goes into the value's associated data: a row copied over another
        // version (a rollback by a database writer) no longer opens.
        let version_id = Uuid::new_v4().to_string();
        let binding = ValueBinding {
            object_id,
            version_id: &version_id,
        };
        let sealed = seal_value(
            &generated.key,
            Uuid::new_v4(),
            wrapped,
            context,
            binding,
            value.as_bytes(),
        )?
        .encode()?;
        Ok(NewVersion {
            id: version_id,
            created_at: Timestamp::now(),
            size: value.len() as u64,
            // The etag hashes the stored ciphertext, never the plaintext (a plaintext hash would
            // let anyone with the database confirm guesses of a value).
            etag: hex(&Sha256::digest(&sealed)[..16]),
            kek_id: generated.kek_id,
            sealed,
        })
    }

    /// Loads an object the attempt's principal may see; objects outside its scope do not exist
    /// for it (the attempt notes the refusal, recorded as `out_of_scope`).
    fn load_visible(
        &self,
        attempt: &mut Attempt<'_>,
        record: ObjectRecord,
    ) -> Result<(ObjectRecord, KeyContext), Error> {
        let context: KeyContext = serde_json::from_str(&record.context_json)
            .map_err(|e| Error::Internal(format!("stored context: {e}")))?;
        if !attempt.principal.may_use(&context) {
            attempt.hidden(&context);
            return Err(Error::NotFound("object"));
        }
        attempt.touches(&context);
        Ok((record, context))
    }

    /// Unwraps through the DEK cache. A revoked-class answer for a tenant CMK marks it
    /// unavailable at once, so the next request is refused without asking KMS again.
    async fn unwrap_dek(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<Arc<DataKey>, KmsError> {
        // A platform KEK the watcher found unusable must not serve DEKs still cached or in flight
        // (the keyring refused it before this request, but the watcher may have marked it since).
        if let Some(failure) = self.keyring.platform_states().unavailable(&kek.key_id) {
            return Err(KmsError::new(failure, "platform KEK marked unavailable"));
        }
        let result = self
            .dek_cache
            .unwrap(self.provider(), kek, wrapped, context)
            .await;
        if let Err(e) = &result
            && e.is_revoked()
            && self.keyring.bindings().owner_of(&kek.key_id).is_some()
        {
            self.byok.mark_kek_unavailable(&kek.key_id, e).await;
        }
        result
    }
}
