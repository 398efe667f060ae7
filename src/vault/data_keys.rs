//! Data-key use cases for client-side encryption: create, decrypt (`encrypted_keys` blobs) and
//! rekey (the same DEK re-wrapped under a new context, through the rewrap mechanism).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use uuid::Uuid;

use crate::audit;
use crate::auth::Principal;
use crate::broker::Broker;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::envelope::{DataKeyBlob, WrappedKey};
use crate::error::Error;
use crate::kms::{KekRef, KmsErrorClass};

use super::{IssuedDataKey, org};

impl Broker {
    pub async fn create_data_key(
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
            encrypted_keys: blob.encode()?,
        })
    }

    /// Opens an `encrypted_keys` blob: the first entry that unwraps wins.
    pub async fn decrypt_data_key(
        &self,
        principal: &Principal,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        let (blob, key, _) = self.open_blob(principal, encrypted_keys_b64).await?;
        let kek_id = blob
            .entries
            .first()
            .map(|e| e.kek_id.clone())
            .unwrap_or_default();
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.dek.decrypted",
                org(&blob.context),
                json!({"key_id": kek_id}),
            ))
            .await?;
        let encrypted_keys = blob.encode()?;
        Ok(IssuedDataKey {
            dek_id: blob.dek_id,
            context: blob.context,
            key,
            encrypted_keys,
        })
    }

    /// Re-wraps the same DEK under `new_context`'s KEK, binding it to the new context.
    pub async fn rekey(
        &self,
        principal: &Principal,
        new_context: KeyContext,
        encrypted_keys_b64: &str,
    ) -> Result<IssuedDataKey, Error> {
        if !principal.may_use(&new_context) {
            return Err(Error::OutOfScope);
        }
        let (blob, key, opened_with) = self.open_blob(principal, encrypted_keys_b64).await?;
        let kek = self.kek_for(principal, &new_context).await?;
        // The rewrap mechanism: ReEncrypt inside KMS when one identity reaches both keys.
        let (source, wrapped) = &opened_with;
        let wrapped = self
            .rewrap_dek(source, wrapped, &blob.context, &kek, &new_context)
            .await
            .map_err(Error::from_kms)?;
        let rekeyed = DataKeyBlob {
            dek_id: blob.dek_id,
            context: new_context.clone(),
            entries: vec![WrappedKey {
                kek_id: kek.key_id.clone(),
                wrapped,
            }],
        };
        let fields = json!({"key_ids": [kek.key_id], "key_context": new_context});
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.dek.read",
                org(&new_context),
                fields,
            ))
            .await?;
        Ok(IssuedDataKey {
            dek_id: rekeyed.dek_id,
            context: new_context,
            key,
            encrypted_keys: rekeyed.encode()?,
        })
    }

    async fn open_blob(
        &self,
        principal: &Principal,
        encrypted_keys_b64: &str,
    ) -> Result<(DataKeyBlob, Arc<DataKey>, (KekRef, Vec<u8>)), Error> {
        let malformed = || {
            Error::invalid(
                "invalid_encrypted_keys",
                "encrypted_keys is not a byok-broker data key blob",
            )
        };
        let bytes = STANDARD
            .decode(encrypted_keys_b64.trim())
            .map_err(|_| malformed())?;
        let blob = DataKeyBlob::decode(&bytes).map_err(|_| malformed())?;
        if !principal.may_use(&blob.context) {
            return Err(Error::OutOfScope);
        }
        // The first entry that unwraps wins; a refused key (revoked, unavailable) is reported
        // over an integrity failure, so a locked-out tenant sees why.
        let mut refused = None;
        let mut last_error = None;
        for entry in &blob.entries {
            let kek = match self.keyring.kek_for_read(&entry.kek_id, &blob.context) {
                Ok(kek) => kek,
                Err(e) => {
                    refused = Some(e);
                    continue;
                }
            };
            match self.unwrap_dek(&kek, &entry.wrapped, &blob.context).await {
                Ok(key) => {
                    let opened_with = (kek, entry.wrapped.clone());
                    return Ok((blob, key, opened_with));
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
            (None, None) => malformed(),
        })
    }
}
