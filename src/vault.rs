//! Vault use cases (objects and data keys): the only code combining keyring, DEK cache, store and
//! envelope. Every object version gets a fresh DEK under its context's current KEK; the key
//! context of an object never changes; scope checks happen before any KMS call.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::audit;
use crate::auth::Principal;
use crate::broker::Broker;
use crate::context::{KeyContext, hex};
use crate::data_key::DataKey;
use crate::envelope::{DataKeyBlob, SealedValue, WrappedKey, open_value, seal_value};
use crate::error::Error;
use crate::keyring::WriteKek;
use crate::kms::{KekRef, KmsError, KmsErrorClass};
use crate::store::{ListQuery, ListedObject, NewObject, NewVersion, ObjectRecord, VersionRecord};
use crate::timestamp::Timestamp;

pub const MAX_NAME_CHARS: usize = 200;

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

impl Broker {
    fn check_value(&self, value: &str) -> Result<(), Error> {
        if value.len() > self.config.limits.max_value_bytes {
            return Err(Error::invalid(
                "value_too_large",
                format!(
                    "value is {} bytes; at most {} are allowed",
                    value.len(),
                    self.config.limits.max_value_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The KEK for `context`; records `vault.kek.created` when this call created it.
    async fn kek_for(&self, principal: &Principal, context: &KeyContext) -> Result<KekRef, Error> {
        let WriteKek {
            kek,
            created_platform_kek,
        } = self.keyring.kek_for_write(context).await?;
        if created_platform_kek {
            let fields = json!({"key_name": self.keyring.alias_for(context), "key_id": kek.key_id});
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
        let sealed = seal_value(
            &generated.key,
            Uuid::new_v4(),
            wrapped,
            context,
            object_id,
            value.as_bytes(),
        )?
        .encode()?;
        Ok(NewVersion {
            id: Uuid::new_v4().to_string(),
            created_at: Timestamp::now(),
            size: value.len() as u64,
            // The etag hashes the stored ciphertext, never the plaintext (a plaintext hash would
            // let anyone with the database confirm guesses of a value).
            etag: hex(&Sha256::digest(&sealed)[..16]),
            kek_id: generated.kek_id,
            sealed,
        })
    }

    /// Loads an object the principal may see; objects outside its scope do not exist for it.
    async fn load_visible(
        &self,
        principal: &Principal,
        record: ObjectRecord,
    ) -> Result<(ObjectRecord, KeyContext), Error> {
        let context: KeyContext = serde_json::from_str(&record.context_json)
            .map_err(|e| Error::Internal(format!("stored context: {e}")))?;
        if !principal.may_use(&context) {
            return Err(Error::NotFound("object"));
        }
        Ok((record, context))
    }

    pub async fn create_object(
        &self,
        principal: &Principal,
        name: &str,
        value: &str,
        context: KeyContext,
    ) -> Result<ObjectMeta, Error> {
        let name = name.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(Error::invalid(
                "invalid_name",
                format!("name must be 1-{MAX_NAME_CHARS} characters"),
            ));
        }
        self.check_value(value)?;
        if !principal.may_use(&context) {
            return Err(Error::OutOfScope);
        }
        let id = Uuid::new_v4().to_string();
        let version = self
            .seal_new_version(principal, &context, &id, value)
            .await?;
        let meta = ObjectMeta {
            id: id.clone(),
            name: name.to_owned(),
            context: context.clone(),
            key_id: version.kek_id.clone(),
            version_id: version.id.clone(),
            updated_at: version.created_at.to_rfc3339(),
            updated_by_id: principal.key_id.clone(),
            updated_by_name: principal.name.clone(),
        };
        // The event commits with the object: an acknowledged write always has its audit record.
        let fields = json!({"kv_name": meta.name, "key_id": meta.key_id, "key_context": context});
        let event = audit::event(Some(principal), "vault.data.created", org(&context), fields);
        let object = NewObject {
            id,
            name: meta.name.clone(),
            context_json: serde_json::to_string(&context)
                .map_err(|e| Error::Internal(e.to_string()))?,
            context_hash: context.hash().to_hex(),
            actor_id: principal.key_id.clone(),
            actor_name: principal.name.clone(),
            version,
        };
        self.store.insert_object(object, vec![event]).await?;
        Ok(meta)
    }

    pub async fn read_object(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ObjectWithValue, Error> {
        let record = self.store.get_object(id).await?;
        self.open_object(principal, record).await
    }

    pub async fn read_object_by_name(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<ObjectWithValue, Error> {
        let record = self.store.get_object_by_name(name).await?;
        self.open_object(principal, record).await
    }

    async fn open_object(
        &self,
        principal: &Principal,
        record: ObjectRecord,
    ) -> Result<ObjectWithValue, Error> {
        let (record, context) = self.load_visible(principal, record).await?;
        let sealed = SealedValue::decode(&record.sealed)?;
        let kek = self.keyring.kek_for_read(&sealed.key.kek_id, &context)?;
        let dek = self
            .unwrap_dek(&kek, &sealed.key.wrapped, &context)
            .await
            .map_err(Error::from_kms)?;
        let plaintext = open_value(&dek, &sealed, &context, &record.id)?;
        let value = String::from_utf8(plaintext.to_vec())
            .map_err(|_| Error::Internal("stored value is not UTF-8".into()))?;
        let meta = meta_from_record(&record, context);
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.data.read",
                org(&meta.context),
                json!({"kv_name": meta.name, "key_id": meta.key_id}),
            ))
            .await?;
        Ok(ObjectWithValue {
            meta,
            value: Zeroizing::new(value),
        })
    }

    pub async fn describe_object(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ObjectMeta, Error> {
        let (record, context) = self
            .load_visible(principal, self.store.get_object(id).await?)
            .await?;
        let meta = meta_from_record(&record, context);
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.metadata.read",
                org(&meta.context),
                json!({"kv_name": meta.name}),
            ))
            .await?;
        Ok(meta)
    }

    pub async fn update_object(
        &self,
        principal: &Principal,
        id: &str,
        value: &str,
        version_check: Option<String>,
    ) -> Result<ObjectMeta, Error> {
        self.check_value(value)?;
        let (record, context) = self
            .load_visible(principal, self.store.get_object(id).await?)
            .await?;
        if let Some(expected) = &version_check
            && expected != &record.current_version
        {
            // Fail before spending a KMS call; the store re-checks atomically below.
            return Err(Error::VersionConflict);
        }
        let version = self
            .seal_new_version(principal, &context, &record.id, value)
            .await?;
        let meta = ObjectMeta {
            key_id: version.kek_id.clone(),
            version_id: version.id.clone(),
            updated_at: version.created_at.to_rfc3339(),
            updated_by_id: principal.key_id.clone(),
            updated_by_name: principal.name.clone(),
            ..meta_from_record(&record, context)
        };
        let fields =
            json!({"kv_name": meta.name, "key_id": meta.key_id, "key_context": meta.context});
        let event = audit::event(
            Some(principal),
            "vault.data.updated",
            org(&meta.context),
            fields,
        );
        self.store
            .append_version(
                &record.id,
                version_check,
                version,
                principal.key_id.clone(),
                principal.name.clone(),
                vec![event],
            )
            .await?;
        Ok(meta)
    }

    pub async fn delete_object(
        &self,
        principal: &Principal,
        id: &str,
        version_check: Option<String>,
    ) -> Result<String, Error> {
        let (record, context) = self
            .load_visible(principal, self.store.get_object(id).await?)
            .await?;
        let event = audit::event(
            Some(principal),
            "vault.data.deleted",
            org(&context),
            json!({"kv_name": record.name}),
        );
        self.store
            .delete_object(&record.id, version_check, vec![event])
            .await?;
        Ok(record.name)
    }

    pub async fn list_objects(
        &self,
        principal: &Principal,
        mut query: ListQuery,
    ) -> Result<(Vec<ListedObject>, bool), Error> {
        query.scope = principal
            .scope
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let page = self.store.list_objects(query).await?;
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.names.listed",
                None,
                json!({}),
            ))
            .await?;
        Ok(page)
    }

    pub async fn list_versions(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Vec<VersionRecord>, Error> {
        let (record, _) = self
            .load_visible(principal, self.store.get_object(id).await?)
            .await?;
        Ok(self.store.list_versions(&record.id).await?)
    }

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

    /// Unwraps through the DEK cache. A revoked-class answer for a tenant CMK marks it
    /// unavailable at once, so the next request is refused without asking KMS again.
    async fn unwrap_dek(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<Arc<DataKey>, KmsError> {
        let result = self
            .dek_cache
            .unwrap(self.provider(), kek, wrapped, context)
            .await;
        if let Err(e) = &result
            && e.is_revoked()
            && self.keyring.bindings().owner_of(&kek.key_id).is_some()
        {
            self.mark_kek_unavailable(&kek.key_id, e).await;
        }
        result
    }
}
