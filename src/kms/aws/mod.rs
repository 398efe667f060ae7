//! The AWS KMS key provider: the only module that talks to aws-sdk-kms and aws-sdk-sts.
//! Plaintext DEKs leave the SDK's `Blob` at once into zeroizing buffers; every call pins the key id
//! and passes the key context as encryption context.

mod classify;
mod clients;
pub mod queue;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyUsageType, Tag};

pub use clients::{AwsOptions, load_sdk_config};

use self::classify::classify;
use crate::context::KeyContext;
use crate::data_key::DataKey;
use crate::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, KmsFailure,
    RotationStatus, TenantAccess, same_key,
};

/// Minimum waiting period AWS allows before a scheduled key deletion takes effect.
const ORPHAN_DELETION_WINDOW_DAYS: i32 = 7;

/// Cache key for derived clients: the broker's own identity or a tenant role, in one region.
type ClientKey = (Option<TenantAccess>, String);

pub struct AwsKms {
    base: SdkConfig,
    default_region: String,
    own: aws_sdk_kms::Client,
    derived: moka::future::Cache<ClientKey, aws_sdk_kms::Client>,
    session_length: Duration,
    sts_endpoint_url: Option<String>,
}

impl AwsKms {
    /// Builds the provider from a loaded SDK configuration. Fails when no region is configured,
    /// because KMS keys are regional and guessing one would send calls to the wrong place.
    pub fn new(base: SdkConfig, options: &AwsOptions) -> Result<Self, KmsError> {
        let default_region = base.region().map(|r| r.to_string()).ok_or_else(|| {
            KmsError::new(
                KmsFailure::InvalidRequest,
                "no AWS region configured: set AWS_REGION or kms.aws.region",
            )
        })?;
        let own = aws_sdk_kms::Client::new(&base);
        let derived = moka::future::Cache::builder()
            .max_capacity(options.tenant_client_capacity)
            // An idle tenant's client (and its assumed-role credentials) does not live forever.
            .time_to_idle(Duration::from_secs(3600))
            .build();
        Ok(Self {
            base,
            default_region,
            own,
            derived,
            session_length: options.tenant_session_length,
            sts_endpoint_url: options.sts_endpoint_url.clone(),
        })
    }

    /// Loads the standard AWS configuration with `options` applied, then builds the provider.
    pub async fn connect(options: &AwsOptions) -> Result<Self, KmsError> {
        let base = load_sdk_config(options).await;
        Self::new(base, options)
    }

    async fn client_for(&self, kek: &KekRef) -> Result<aws_sdk_kms::Client, KmsError> {
        let region = clients::region_of(kek, &self.default_region)?;
        if kek.access.is_none() && region == self.default_region {
            return Ok(self.own.clone());
        }
        let key: ClientKey = (kek.access.clone(), region.to_owned());
        let client = self
            .derived
            .get_with_by_ref(&key, async {
                match &kek.access {
                    Some(access) => {
                        clients::tenant_client(
                            &self.base,
                            access,
                            region,
                            self.session_length,
                            self.sts_endpoint_url.as_deref(),
                        )
                        .await
                    }
                    None => clients::regional_client(&self.base, region),
                }
            })
            .await;
        Ok(client)
    }
}

fn encryption_context(context: &KeyContext) -> HashMap<String, String> {
    context
        .pairs()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn missing(field: &str) -> KmsError {
    KmsError::new(
        KmsFailure::ServiceInternal,
        format!("KMS response lacked {field}"),
    )
}

fn take_data_key(blob: Option<Blob>) -> Result<DataKey, KmsError> {
    let bytes = blob.ok_or_else(|| missing("Plaintext"))?.into_inner();
    DataKey::from_vec(bytes).map_err(|e| KmsError::new(KmsFailure::ServiceInternal, e.to_string()))
}

#[async_trait]
impl KeyProvider for AwsKms {
    fn name(&self) -> &'static str {
        "aws_kms"
    }

    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        let client = self.client_for(kek).await?;
        let mut out = client
            .generate_data_key()
            .key_id(&kek.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(classify)?;
        let key = take_data_key(out.plaintext.take())?;
        let wrapped = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| missing("CiphertextBlob"))?
            .into_inner();
        let kek_id = out.key_id.take().ok_or_else(|| missing("KeyId"))?;
        Ok(GeneratedDataKey {
            key,
            wrapped,
            kek_id,
        })
    }

    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        let client = self.client_for(kek).await?;
        let mut out = client
            .decrypt()
            .key_id(&kek.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(classify)?;
        let key = take_data_key(out.plaintext.take())?;
        let answered = out.key_id.as_deref().unwrap_or_default();
        if !same_key(&kek.key_id, answered) {
            return Err(KmsError::new(
                KmsFailure::IncorrectKey,
                format!("KMS decrypted with {answered}, expected {}", kek.key_id),
            ));
        }
        Ok(key)
    }

    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let client = self.client_for(kek).await?;
        // The SDK copies the plaintext into its request body; those buffers are not ours to zeroize.
        let out = client
            .encrypt()
            .key_id(&kek.key_id)
            .plaintext(Blob::new(key.expose_secret().as_slice()))
            .set_encryption_context(Some(encryption_context(context)))
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .ciphertext_blob
            .ok_or_else(|| missing("CiphertextBlob"))?
            .into_inner())
    }

    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        // The source is named inside the request: its id must be well formed too.
        clients::region_of(source, &self.default_region)?;
        let client = self.client_for(destination).await?;
        let out = client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(&source.key_id)
            .set_source_encryption_context(Some(encryption_context(source_context)))
            .destination_key_id(&destination.key_id)
            .set_destination_encryption_context(Some(encryption_context(destination_context)))
            .send()
            .await
            .map_err(classify)?;
        Ok(out
            .ciphertext_blob
            .ok_or_else(|| missing("CiphertextBlob"))?
            .into_inner())
    }

    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        let client = self.client_for(kek).await?;
        let out = client
            .describe_key()
            .key_id(&kek.key_id)
            .send()
            .await
            .map_err(classify)?;
        let meta = out.key_metadata.ok_or_else(|| missing("KeyMetadata"))?;
        Ok(KeyDescription {
            key_id: meta.arn().unwrap_or(meta.key_id()).to_owned(),
            enabled: meta.enabled(),
            symmetric_encrypt_decrypt: meta.key_spec() == Some(&KeySpec::SymmetricDefault)
                && meta.key_usage() == Some(&KeyUsageType::EncryptDecrypt),
            state: meta
                .key_state()
                .map_or_else(|| "Unknown".to_owned(), |s| s.as_str().to_owned()),
        })
    }

    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError> {
        match self.describe(&KekRef::platform(alias)).await {
            Ok(description) => Ok(Some(description.key_id)),
            Err(e) if e.failure == KmsFailure::KeyNotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        let tag = Tag::builder()
            .tag_key("created-by")
            .tag_value("byok-broker")
            .build()
            .map_err(|e| KmsError::new(KmsFailure::InvalidRequest, e.to_string()))?;
        let out = self
            .own
            .create_key()
            .description(description)
            .key_usage(KeyUsageType::EncryptDecrypt)
            .key_spec(KeySpec::SymmetricDefault)
            .tags(tag)
            .send()
            .await
            .map_err(classify)?;
        let meta = out.key_metadata.ok_or_else(|| missing("KeyMetadata"))?;
        Ok(meta.arn().unwrap_or(meta.key_id()).to_owned())
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError> {
        let result = self
            .own
            .create_alias()
            .alias_name(alias)
            .target_key_id(key_id)
            .send()
            .await;
        match result {
            Ok(_) => Ok(AliasOutcome::Created),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_already_exists_exception()) =>
            {
                Ok(AliasOutcome::AlreadyExists)
            }
            Err(e) => Err(classify(e)),
        }
    }

    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        self.own
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(ORPHAN_DELETION_WINDOW_DAYS)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError> {
        let period = i32::try_from(period_days)
            .map_err(|_| KmsError::new(KmsFailure::InvalidRequest, "rotation period too long"))?;
        self.client_for(kek)
            .await?
            .enable_key_rotation()
            .key_id(&kek.key_id)
            .rotation_period_in_days(period)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError> {
        let out = self
            .client_for(kek)
            .await?
            .get_key_rotation_status()
            .key_id(&kek.key_id)
            .send()
            .await
            .map_err(classify)?;
        let enabled = out.key_rotation_enabled();
        Ok(RotationStatus {
            enabled,
            period_days: out
                .rotation_period_in_days()
                .filter(|_| enabled)
                .and_then(|d| u32::try_from(d).ok()),
            next_rotation: out.next_rotation_date().filter(|_| enabled).map(|at| {
                crate::timestamp::Timestamp(at.secs().saturating_mul(1_000_000)).to_rfc3339()
            }),
        })
    }

    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError> {
        self.client_for(kek)
            .await?
            .rotate_key_on_demand()
            .key_id(&kek.key_id)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}
