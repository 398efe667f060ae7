//! Key providers: the `KeyProvider` trait that wraps and unwraps DEKs under a KEK, with an AWS KMS
//! implementation and an embedded local one. Every call binds the key context as encryption context.

pub mod aws;
pub mod budget;
mod error;
pub mod events;
pub mod local;

use async_trait::async_trait;

pub use error::{KmsError, KmsErrorClass, KmsFailure};

use crate::context::KeyContext;
use crate::data_key::DataKey;

/// How the broker reaches a tenant's key: through an IAM role in the tenant's account.
/// The external id is not a secret (AWS documents it as a confused-deputy guard), so it may be logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantAccess {
    pub role_arn: String,
    pub external_id: Option<String>,
}

/// A KEK as a provider call needs it: the key id (an ARN for AWS, `local/<uuid>` for the local
/// provider), its region when not the default, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KekRef {
    pub key_id: String,
    pub region: Option<String>,
    pub access: Option<TenantAccess>,
}

impl KekRef {
    /// The region named explicitly or in the key ARN; `None` means the provider's default region.
    pub fn region_hint(&self) -> Option<&str> {
        self.region.as_deref().or_else(|| {
            let mut parts = self.key_id.strip_prefix("arn:")?.split(':');
            let (_partition, service, region) = (parts.next()?, parts.next()?, parts.next()?);
            (service == "kms" && !region.is_empty()).then_some(region)
        })
    }

    /// True when one identity in one region reaches both keys, so KMS `ReEncrypt` can move a DEK
    /// between them without the plaintext leaving KMS.
    pub fn shares_identity_with(&self, other: &KekRef) -> bool {
        self.access == other.access && self.region_hint() == other.region_hint()
    }

    /// A platform KEK: reached with the broker's own credentials in the default region.
    pub fn platform(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            region: None,
            access: None,
        }
    }
}

/// A new DEK: the plaintext for sealing, the wrapped form for storage, and the KEK id as the
/// provider reported it (a full ARN for AWS).
#[derive(Debug)]
pub struct GeneratedDataKey {
    pub key: DataKey,
    pub wrapped: Vec<u8>,
    pub kek_id: String,
}

/// What `describe` reports about a KEK; enough to verify a tenant key and to watch its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    pub key_id: String,
    pub enabled: bool,
    pub symmetric_encrypt_decrypt: bool,
    pub state: String,
}

/// What `GetKeyRotationStatus` reports: whether the key's backing material rotates automatically,
/// how often, and when next (RFC 3339). Rotation never changes the key id: KMS keeps every earlier
/// backing material and decrypts with the one a ciphertext was made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatus {
    pub enabled: bool,
    pub period_days: Option<u32>,
    pub next_rotation: Option<String>,
}

/// Outcome of creating an alias: losing a race to another caller is a normal outcome, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasOutcome {
    Created,
    AlreadyExists,
}

/// The operations the broker needs from a KMS. Implementations classify every failure into
/// [`KmsError`]; they never log key material and never return it inside an error.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// `"aws_kms"` or `"local"`: for logs, metrics and readiness.
    fn name(&self) -> &'static str;

    /// A fresh 256-bit DEK wrapped under `kek` with `context` as encryption context.
    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError>;

    /// Unwraps `wrapped` under exactly `kek` (the key id is pinned) with `context`. A blob of another
    /// key is an integrity error, never silently opened under the key that made it.
    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError>;

    /// Wraps an existing DEK under `kek` (rekey, and rewrap across credential boundaries).
    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError>;

    /// Moves a wrapped DEK from `source` to `destination` inside the KMS, so the plaintext DEK
    /// never enters the broker. Both keys must be reachable with the destination's credentials.
    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError>;

    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError>;

    /// The key id an alias (`alias/...`) points at, with the broker's own credentials.
    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError>;

    /// Creates a symmetric ENCRYPT_DECRYPT key in the broker's account and returns its id.
    async fn create_key(&self, description: &str) -> Result<String, KmsError>;

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError>;

    /// Schedules a broker-owned key for deletion (used for the orphan of a lost creation race).
    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError>;

    /// Turns on automatic rotation of `kek`'s backing material every `period_days` (AWS allows
    /// 90-2560). Idempotent: enabling again with another period changes the period.
    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError>;

    /// Whether `kek` rotates automatically (`GetKeyRotationStatus`). Not a crypto operation: a
    /// refusal says nothing about whether the key can still be used.
    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError>;

    /// Rotates `kek`'s backing material now (`RotateKeyOnDemand`). Existing ciphertexts (wrapped
    /// DEKs) stay decryptable under the same key id; new ones use the new material.
    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError>;
}

/// True when the key id KMS answered with names the same key as the one we asked for.
/// KMS answers with a full key ARN; callers may hold an ARN or a bare key id.
pub fn same_key(requested: &str, answered: &str) -> bool {
    if requested == answered {
        return true;
    }
    let tail = |id: &str| id.rsplit_once(":key/").map(|(_, t)| t.to_owned());
    match (tail(requested), tail(answered)) {
        (Some(a), Some(b)) => a == b && arn_prefix(requested) == arn_prefix(answered),
        (None, Some(b)) => requested == b,
        (Some(a), None) => a == answered,
        (None, None) => false,
    }
}

fn arn_prefix(arn: &str) -> &str {
    arn.rsplit_once(":key/").map_or(arn, |(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::same_key;

    #[test]
    fn reencrypt_needs_one_identity_in_one_region() {
        use super::{KekRef, TenantAccess};
        let role = |r: &str| {
            Some(TenantAccess {
                role_arn: r.into(),
                external_id: None,
            })
        };
        let a = KekRef {
            key_id: "arn:aws:kms:us-east-1:111111111111:key/a".into(),
            region: None,
            access: role("r1"),
        };
        let b = KekRef {
            key_id: "arn:aws:kms:us-east-1:111111111111:key/b".into(),
            ..a.clone()
        };
        assert!(a.shares_identity_with(&b));
        let other_region = KekRef {
            key_id: "arn:aws:kms:eu-west-1:111111111111:key/c".into(),
            ..a.clone()
        };
        assert!(!a.shares_identity_with(&other_region));
        let other_role = KekRef {
            access: role("r2"),
            ..b.clone()
        };
        assert!(!a.shares_identity_with(&other_role));
        assert!(KekRef::platform("local/x").shares_identity_with(&KekRef::platform("local/y")));
    }

    #[test]
    fn same_key_compares_arns_and_bare_ids() {
        let arn = "arn:aws:kms:us-east-1:111111111111:key/1234";
        assert!(same_key(arn, arn));
        assert!(same_key("1234", arn));
        assert!(!same_key("5678", arn));
        assert!(!same_key(
            "arn:aws:kms:us-east-1:222222222222:key/1234",
            arn
        ));
        assert!(!same_key("alias/x", arn));
    }
}
