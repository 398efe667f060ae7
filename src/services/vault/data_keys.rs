//! Data-key use cases for client-side encryption: create, decrypt (`encrypted_keys` blobs) and
//! rekey (the same DEK re-wrapped under a new context, through the rewrap mechanism). A blob is
//! caller input: an entry is unwrapped only under a KEK the broker holds for the blob's context,
//! and a v2 blob's tag is checked with the unwrapped DEK before any of its fields is used.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Principal;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::envelope::{DataKeyBlob, WrappedKey};
use crate::error::{Error, ErrorCode};
use crate::keyring::KeyAccessError;
use crate::kms::{KekRef, KmsErrorClass};
use crate::rewrap::rewrap_dek;

use super::refusals::Attempt;
use super::{IssuedDataKey, Vault, org};

impl Vault {
    pub async fn create_data_key(
        &self,
        principal: &Principal,
        context: KeyContext,
    ) -> Result<IssuedDataKey, Error> {
        let mut attempt = Attempt::new(principal, "vault.dek.read");
        attempt.touches(&context);
        let outcome = self.create_data_key_checked(principal, context).await;
        self.settle(attempt, outcome).await
    }

    async fn create_data_key_checked(
        &self,
        principal: &Principal,
        context: KeyContext,
    ) -> Result<IssuedDataKey, Error> {
        if !principal.may_use(&context) {
            return Err(Error::OutOfScope);
        }
        let kek = self.kek_for(principal, &context).await?;
        let generated = self
            .provider()
            .generate_data_key(&kek, &context)
            .await
            .map_err(Error::from_kms)?;
        let dek_id = Uuid::new_v4();
        let blob = DataKeyBlob {
            dek_id,
            context: context.clone(),
            entries: vec![WrappedKey {
                kek_id: generated.kek_id.clone(),
                wrapped: generated.wrapped,
            }],
        };
        let encrypted_keys = blob.encode(&generated.key)?;
        let fields = json!({"key_ids": [generated.kek_id], "key_context": context});
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.dek.read",
                org(&context),
                fields,
            ))
            .await?;
        Ok(IssuedDataKey {
            dek_id,
            context,
            key: Arc::new(generated.key),
            encrypted_keys,
        })
    }

    /// Opens an `encrypted_keys` blob: the first entry that unwraps wins.
    pub async fn decrypt_data_key(
        &self,
        principal: &Principal,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        let mut attempt = Attempt::new(principal, "vault.dek.decrypted");
        let outcome = self
            .decrypt_data_key_checked(&mut attempt, encrypted_keys_b64)
            .await;
        self.settle(attempt, outcome).await
    }

    async fn decrypt_data_key_checked(
        &self,
        attempt: &mut Attempt<'_>,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        let principal = attempt.principal;
        let opened = self.open_blob(attempt, encrypted_keys_b64).await?;
        // The audit names the KEK that opened the DEK, never an id the caller merely wrote in.
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.dek.decrypted",
                org(&opened.blob.context),
                json!({"key_id": opened.kek.key_id}),
            ))
            .await?;
        Ok(IssuedDataKey {
            dek_id: opened.blob.dek_id,
            context: opened.blob.context,
            key: opened.key,
            // Exactly the blob that was verified (a v1 blob stays v1: re-issuing it as v2 would
            // vouch for its unauthenticated DEK id).
            encrypted_keys: opened.bytes,
        })
    }

    /// Re-wraps the same DEK under `new_context`'s KEK, binding it to the new context.
    pub async fn rekey(
        &self,
        principal: &Principal,
        new_context: KeyContext,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        let mut attempt = Attempt::new(principal, "vault.dek.rekeyed");
        attempt.touches(&new_context);
        let outcome = self
            .rekey_checked(&mut attempt, new_context, encrypted_keys_b64)
            .await;
        self.settle(attempt, outcome).await
    }

    /// Rekeys and records it for both organizations: `vault.dek.rekeyed` (the source KEK that
    /// opened the DEK, the destination KEK and both contexts) under the source organization and,
    /// when it differs, under the destination's; `vault.dek.read` under the destination, as a
    /// data-key issue.
    async fn rekey_checked(
        &self,
        attempt: &mut Attempt<'_>,
        new_context: KeyContext,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        let principal = attempt.principal;
        if !principal.may_use(&new_context) {
            return Err(Error::OutOfScope);
        }
        let OpenedBlob {
            blob,
            key,
            kek: source,
            wrapped,
            legacy,
            ..
        } = self.open_blob(attempt, encrypted_keys_b64).await?;
        // From here on a refusal concerns the destination.
        attempt.touches(&new_context);
        let kek = self.kek_for(principal, &new_context).await?;
        // The rewrap mechanism: ReEncrypt inside KMS when one identity reaches both keys.
        let wrapped = rewrap_dek(
            self.provider(),
            &source,
            &wrapped,
            &blob.context,
            &kek,
            &new_context,
        )
        .await
        .map_err(Error::from_kms)?;
        let rekeyed = DataKeyBlob {
            // A format 1 blob's DEK id is unauthenticated: the tagged blob gets a fresh id rather
            // than vouching for one the caller may have written in.
            dek_id: if legacy { Uuid::new_v4() } else { blob.dek_id },
            context: new_context.clone(),
            entries: vec![WrappedKey {
                kek_id: kek.key_id.clone(),
                wrapped,
            }],
        };
        let encrypted_keys = rekeyed.encode(&key)?;
        let rekeyed_fields = json!({
            "key_id": source.key_id,
            "key_context": blob.context,
            "destination_key_id": kek.key_id,
            "destination_key_context": new_context,
        });
        let rekeyed_event = |organization: Option<&str>| {
            audit::event(
                Some(principal),
                "vault.dek.rekeyed",
                organization,
                rekeyed_fields.clone(),
            )
        };
        let (source_org, destination_org) = (org(&blob.context), org(&new_context));
        let read = audit::event(
            Some(principal),
            "vault.dek.read",
            destination_org,
            json!({"key_ids": [kek.key_id], "key_context": new_context}),
        );
        // Queued together, so they usually share one commit.
        let for_destination = async {
            if destination_org == source_org {
                return Ok(());
            }
            self.audit.record(rekeyed_event(destination_org)).await
        };
        tokio::try_join!(
            self.audit.record(rekeyed_event(source_org)),
            for_destination,
            self.audit.record(read),
        )?;
        Ok(IssuedDataKey {
            dek_id: rekeyed.dek_id,
            context: new_context,
            key,
            encrypted_keys,
        })
    }

    async fn open_blob(
        &self,
        attempt: &mut Attempt<'_>,
        encrypted_keys_b64: &str,
    ) -> Result<OpenedBlob, Error> {
        let principal = attempt.principal;
        let malformed = || {
            Error::invalid(
                ErrorCode::InvalidEncryptedKeys,
                "encrypted_keys is not a byok-broker data key blob",
            )
        };
        let bytes = STANDARD
            .decode(encrypted_keys_b64.trim())
            .map_err(|_| malformed())?;
        let parsed = DataKeyBlob::decode(&bytes).map_err(|_| malformed())?;
        if parsed.is_legacy() && !self.limits.accept_legacy_data_key_blobs {
            return Err(Error::invalid(
                ErrorCode::InvalidEncryptedKeys,
                "encrypted_keys is in the untagged format 1, which this broker no longer accepts",
            ));
        }
        let context = &parsed.blob.context;
        attempt.touches(context);
        if !principal.may_use(context) {
            return Err(Error::OutOfScope);
        }
        // The first entry that unwraps wins; a refused key (revoked, unavailable) is reported
        // over an integrity failure, so a locked-out tenant sees why. An entry naming a key the
        // broker does not hold for this context is skipped without any KMS call.
        let mut refused = None;
        let mut last_error = None;
        let mut not_held = false;
        for entry in &parsed.blob.entries {
            let kek = match self.keyring.kek_for_read(&entry.kek_id, context).await {
                Ok(kek) => kek,
                Err(KeyAccessError::NotHeldForContext) => {
                    not_held = true;
                    continue;
                }
                Err(e) => {
                    refused = Some(e);
                    continue;
                }
            };
            match self.unwrap_dek(&kek, &entry.wrapped, context).await {
                Ok(key) => {
                    // Only the DEK can vouch for the other fields (DEK id, entries) of a v2 blob.
                    parsed
                        .verify(&key)
                        .map_err(|_| Error::EncryptedKeysIntegrity)?;
                    let wrapped = entry.wrapped.clone();
                    let legacy = parsed.is_legacy();
                    return Ok(OpenedBlob {
                        legacy,
                        blob: parsed.blob,
                        key,
                        kek,
                        wrapped,
                        bytes,
                    });
                }
                Err(e) if e.class() == KmsErrorClass::Integrity => {
                    last_error = Some(Error::EncryptedKeysIntegrity)
                }
                Err(e) => last_error = Some(Error::from_kms(e)),
            }
        }
        Err(match (refused, last_error) {
            (Some(e), _) => e.into(),
            (None, Some(e)) => e,
            (None, None) if not_held => not_held_for_context(),
            (None, None) => malformed(),
        })
    }
}

/// An opened blob: its fields (authenticated for v2), the DEK, and the entry that opened it.
struct OpenedBlob {
    blob: DataKeyBlob,
    key: Arc<DataKey>,
    kek: KekRef,
    wrapped: Vec<u8>,
    /// The blob's bytes exactly as given.
    bytes: Vec<u8>,
    /// Format 1: no tag, so its DEK id is the caller's word only.
    legacy: bool,
}

/// One answer for every key the broker does not hold for the blob's context, so a caller learns
/// nothing about another tenant's key (whether it exists, is disabled or is someone else's).
fn not_held_for_context() -> Error {
    Error::invalid(
        ErrorCode::InvalidEncryptedKeys,
        "encrypted_keys names a key that does not protect its key context",
    )
}
