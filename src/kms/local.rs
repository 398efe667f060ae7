//! Embedded key provider for the zero-setup default: KEKs are random AES-256 keys sealed under a
//! master key in the data directory. It mirrors KMS semantics the broker relies on (key id pinned,
//! encryption context bound, disabled keys refused, alias creation race-safe across processes).
//! It is for development and single-node use; production tenants use AWS KMS.
//!
//! Rotation mirrors KMS too: a key's backing material has versions. Version 0 is the random
//! material sealed in the key file (files written before rotation existed are exactly this);
//! version n ≥ 1 is derived from the master key, the key id and n (HMAC-SHA256), so the file only
//! records the current version number and no rotation can ever lose a material: two processes
//! rotating at once arrive at the same material, and every earlier version stays derivable for
//! decryption. A wrapped DEK names the version it was made under (`BBL1`: version 0, the format
//! every earlier release wrote; `BBL2`: a version number follows the key id). Automatic rotation
//! happens on the first wrap after the period has passed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::aead;
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, KmsFailure,
    RotationStatus,
};

const KEY_ID_PREFIX: &str = "local/";
const WRAP_MAGIC: &[u8; 4] = b"BBL1";
/// A wrapped DEK made under a rotated material: the version (4 bytes, big endian) follows the id.
const WRAP_MAGIC_VERSIONED: &[u8; 4] = b"BBL2";
const VERSION_LEN: usize = 4;
const UUID_LEN: usize = 36;
const WRAP_AAD_DOMAIN: &[u8] = b"byok-broker/local-kms/wrap/v1\0";
const KEK_AAD_DOMAIN: &[u8] = b"byok-broker/local-kms/kek/v1\0";
const MATERIAL_DOMAIN: &[u8] = b"byok-broker/local-kms/material/v1\0";
pub use crate::config::platform_keks::ROTATION_PERIOD_DAYS;
const DAY_SECONDS: i64 = 86_400;

pub struct LocalKms {
    root: PathBuf,
    master: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    id: String,
    description: String,
    enabled: bool,
    /// The KEK sealed under the master key, base64: backing material version 0.
    sealed: String,
    /// The current backing material version (0 until the first rotation). Absent in older files.
    #[serde(default, skip_serializing_if = "is_zero")]
    version: u32,
    /// Automatic rotation's period in days; `None`: automatic rotation off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_period_days: Option<u32>,
    /// Unix seconds the automatic rotation period counts from: when it was enabled, or the last
    /// automatic rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_since_unix: Option<i64>,
}

fn is_zero(version: &u32) -> bool {
    *version == 0
}

impl KeyFile {
    /// Unix seconds of the next automatic rotation, if automatic rotation is on.
    fn next_rotation_unix(&self) -> Option<i64> {
        let period = i64::from(self.rotation_period_days?);
        Some(self.rotation_since_unix.unwrap_or(0) + period * DAY_SECONDS)
    }

    /// Whether automatic rotation is due at `now` (Unix seconds).
    fn rotation_due(&self, now: i64) -> bool {
        self.next_rotation_unix().is_some_and(|next| now >= next)
    }
}

struct LoadedKek {
    material: Zeroizing<[u8; 32]>,
    version: u32,
    enabled: bool,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl LocalKms {
    /// Opens (or creates) the local key store under `dir`, creating the master key on first use.
    pub async fn open(dir: &Path) -> Result<Self, KmsError> {
        let root = dir.to_path_buf();
        for sub in ["keys", "aliases"] {
            tokio::fs::create_dir_all(root.join(sub))
                .await
                .map_err(io)?;
        }
        let master = load_or_create_master(&root.join("master.key")).await?;
        Ok(Self { root, master })
    }

    /// Disables or enables a local KEK (what `DisableKey`/`EnableKey` are for AWS).
    pub async fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<(), KmsError> {
        let path = self.key_path(key_id)?;
        let mut file = self.read_key_file(&path).await?;
        file.enabled = enabled;
        write_atomically(&path, &serde_json::to_vec(&file).map_err(internal)?).await
    }

    fn key_path(&self, key_id: &str) -> Result<PathBuf, KmsError> {
        let uuid = key_id
            .strip_prefix(KEY_ID_PREFIX)
            .filter(|u| uuid::Uuid::parse_str(u).is_ok())
            .ok_or_else(|| {
                KmsError::new(KmsFailure::KeyNotFound, format!("no local key {key_id:?}"))
            })?;
        Ok(self.root.join("keys").join(format!("{uuid}.json")))
    }

    async fn read_key_file(&self, path: &Path) -> Result<KeyFile, KmsError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(internal),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(KmsError::new(
                KmsFailure::KeyNotFound,
                "local key not found",
            )),
            Err(e) => Err(io(e)),
        }
    }

    /// The backing material `version` of the key `file` describes.
    fn material(&self, file: &KeyFile, version: u32) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        if version > 0 {
            return Ok(derive_material(&self.master, &file.id, version));
        }
        let sealed = STANDARD.decode(&file.sealed).map_err(internal)?;
        let material = Zeroizing::new(
            aead::open(&self.master, &kek_aad(&file.id), &sealed).map_err(|e| {
                KmsError::new(
                    KmsFailure::ServiceInternal,
                    format!("local key unreadable: {e}"),
                )
            })?,
        );
        let material: [u8; 32] = material.as_slice().try_into().map_err(internal)?;
        Ok(Zeroizing::new(material))
    }

    /// The key with its current material, or with `version`'s (decryption of older DEKs).
    async fn load_version(
        &self,
        key_id: &str,
        version: Option<u32>,
    ) -> Result<LoadedKek, KmsError> {
        let file = self.read_key_file(&self.key_path(key_id)?).await?;
        let version = version.unwrap_or(file.version);
        Ok(LoadedKek {
            material: self.material(&file, version)?,
            version,
            enabled: file.enabled,
        })
    }

    async fn load(&self, key_id: &str) -> Result<LoadedKek, KmsError> {
        self.load_version(key_id, None).await
    }

    fn refuse_disabled(key_id: &str, kek: LoadedKek) -> Result<LoadedKek, KmsError> {
        if !kek.enabled {
            return Err(KmsError::new(
                KmsFailure::KeyDisabled,
                format!("{key_id} is disabled"),
            ));
        }
        Ok(kek)
    }

    /// The enabled key with its current material for a new wrap, rotating it first when
    /// automatic rotation is due (what KMS does on its own schedule).
    async fn load_for_wrap(&self, key_id: &str) -> Result<LoadedKek, KmsError> {
        let path = self.key_path(key_id)?;
        let file = self.read_key_file(&path).await?;
        if file.enabled && file.rotation_due(unix_now()) {
            self.rotate(key_id, true).await?;
        }
        Self::refuse_disabled(key_id, self.load(key_id).await?)
    }

    /// Moves the key to a new backing material version. `automatic`: the period starts again.
    async fn rotate(&self, key_id: &str, automatic: bool) -> Result<u32, KmsError> {
        let path = self.key_path(key_id)?;
        let mut file = self.read_key_file(&path).await?;
        if !file.enabled {
            return Err(KmsError::new(
                KmsFailure::KeyDisabled,
                format!("{key_id} is disabled"),
            ));
        }
        file.version = file
            .version
            .checked_add(1)
            .ok_or_else(|| KmsError::new(KmsFailure::InvalidRequest, "too many rotations"))?;
        if automatic {
            file.rotation_since_unix = Some(unix_now());
        }
        write_atomically(&path, &serde_json::to_vec(&file).map_err(internal)?).await?;
        tracing::info!(
            kek_id = key_id,
            version = file.version,
            automatic,
            "rotated local KEK"
        );
        Ok(file.version)
    }

    fn alias_path(&self, alias: &str) -> PathBuf {
        // Alias names use [a-zA-Z0-9/_-]; '~' cannot occur in them, so this mapping is injective.
        self.root.join("aliases").join(alias.replace('/', "~"))
    }

    fn wrap(
        kek_id: &str,
        kek: &LoadedKek,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let uuid = &kek_id[KEY_ID_PREFIX.len()..];
        let sealed =
            aead::seal(&kek.material, &wrap_aad(context), key.expose_secret()).map_err(internal)?;
        let mut out = Vec::with_capacity(WRAP_MAGIC.len() + UUID_LEN + VERSION_LEN + sealed.len());
        // Material version 0 keeps the original format, which every earlier release reads.
        if kek.version == 0 {
            out.extend_from_slice(WRAP_MAGIC);
            out.extend_from_slice(uuid.as_bytes());
        } else {
            out.extend_from_slice(WRAP_MAGIC_VERSIONED);
            out.extend_from_slice(uuid.as_bytes());
            out.extend_from_slice(&kek.version.to_be_bytes());
        }
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn unwrap(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        let invalid = || KmsError::new(KmsFailure::InvalidCiphertext, "not a local wrapped key");
        let (versioned, rest) = match wrapped.strip_prefix(WRAP_MAGIC.as_slice()) {
            Some(rest) => (false, rest),
            None => (
                true,
                wrapped
                    .strip_prefix(WRAP_MAGIC_VERSIONED.as_slice())
                    .ok_or_else(invalid)?,
            ),
        };
        if rest.len() < UUID_LEN {
            return Err(invalid());
        }
        let (uuid, rest) = rest.split_at(UUID_LEN);
        let (version, sealed) = if versioned {
            let (version, sealed) = rest.split_at_checked(VERSION_LEN).ok_or_else(invalid)?;
            let version = u32::from_be_bytes(version.try_into().map_err(|_| invalid())?);
            if version == 0 {
                return Err(invalid());
            }
            (version, sealed)
        } else {
            (0, rest)
        };
        let made_by = format!("{KEY_ID_PREFIX}{}", String::from_utf8_lossy(uuid));
        if made_by != kek_id {
            return Err(KmsError::new(
                KmsFailure::IncorrectKey,
                format!("ciphertext was made by {made_by}, not {kek_id}"),
            ));
        }
        let kek = Self::refuse_disabled(kek_id, self.load_version(kek_id, Some(version)).await?)?;
        let plaintext = Zeroizing::new(
            aead::open(&kek.material, &wrap_aad(context), sealed).map_err(|_| {
                KmsError::new(
                    KmsFailure::InvalidCiphertext,
                    "wrapped key does not open under this key and context",
                )
            })?,
        );
        DataKey::from_slice(&plaintext).map_err(|_| invalid())
    }
}

#[async_trait]
impl KeyProvider for LocalKms {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        let loaded = self.load_for_wrap(&kek.key_id).await?;
        let key = DataKey::random().map_err(internal)?;
        let wrapped = Self::wrap(&kek.key_id, &loaded, &key, context)?;
        Ok(GeneratedDataKey {
            key,
            wrapped,
            kek_id: kek.key_id.clone(),
        })
    }

    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        self.unwrap(&kek.key_id, wrapped, context).await
    }

    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let loaded = self.load_for_wrap(&kek.key_id).await?;
        Self::wrap(&kek.key_id, &loaded, key, context)
    }

    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        let key = self.unwrap(&source.key_id, wrapped, source_context).await?;
        self.encrypt(destination, &key, destination_context).await
    }

    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        let key_id = match kek.key_id.strip_prefix("alias/") {
            Some(_) => self.find_alias(&kek.key_id).await?.ok_or_else(|| {
                KmsError::new(KmsFailure::KeyNotFound, format!("no alias {}", kek.key_id))
            })?,
            None => kek.key_id.clone(),
        };
        let loaded = self.load(&key_id).await?;
        Ok(KeyDescription {
            key_id,
            enabled: loaded.enabled,
            symmetric_encrypt_decrypt: true,
            state: if loaded.enabled {
                "Enabled"
            } else {
                "Disabled"
            }
            .to_owned(),
        })
    }

    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError> {
        match tokio::fs::read_to_string(self.alias_path(alias)).await {
            Ok(id) if !id.is_empty() => Ok(Some(id)),
            // An empty file is an alias being written by another process right now; treat it as
            // absent so the caller's create_alias sees AlreadyExists and retries the lookup.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let id = format!("{KEY_ID_PREFIX}{uuid}");
        let material = DataKey::random().map_err(internal)?;
        let sealed =
            aead::seal(&self.master, &kek_aad(&id), material.expose_secret()).map_err(internal)?;
        let file = KeyFile {
            id: id.clone(),
            description: description.to_owned(),
            enabled: true,
            sealed: STANDARD.encode(sealed),
            version: 0,
            rotation_period_days: None,
            rotation_since_unix: None,
        };
        let path = self.key_path(&id)?;
        write_atomically(&path, &serde_json::to_vec(&file).map_err(internal)?).await?;
        Ok(id)
    }

    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError> {
        let final_path = self.alias_path(alias);
        // Write to a unique temp file, then hard-link it into place: link() fails if the alias
        // exists, so exactly one creator wins and no reader ever sees a half-written alias.
        let temp = final_path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&temp, key_id).await.map_err(io)?;
        let linked = tokio::fs::hard_link(&temp, &final_path).await;
        let _ = tokio::fs::remove_file(&temp).await;
        match linked {
            Ok(()) => Ok(AliasOutcome::Created),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(AliasOutcome::AlreadyExists),
            Err(e) => Err(io(e)),
        }
    }

    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        // Local keys have no waiting period; a disabled key is the equivalent of pending deletion.
        self.set_enabled(key_id, false).await
    }

    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError> {
        if !ROTATION_PERIOD_DAYS.contains(&period_days) {
            return Err(KmsError::new(
                KmsFailure::InvalidRequest,
                format!("rotation period {period_days} days is outside 90-2560"),
            ));
        }
        let path = self.key_path(&kek.key_id)?;
        let mut file = self.read_key_file(&path).await?;
        if file.rotation_period_days == Some(period_days) {
            return Ok(());
        }
        if file.rotation_period_days.is_none() {
            file.rotation_since_unix = Some(unix_now());
        }
        file.rotation_period_days = Some(period_days);
        write_atomically(&path, &serde_json::to_vec(&file).map_err(internal)?).await
    }

    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError> {
        let file = self.read_key_file(&self.key_path(&kek.key_id)?).await?;
        Ok(RotationStatus {
            enabled: file.rotation_period_days.is_some(),
            period_days: file.rotation_period_days,
            next_rotation: file
                .next_rotation_unix()
                .map(|at| crate::timestamp::Timestamp(at.saturating_mul(1_000_000)).to_rfc3339()),
        })
    }

    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError> {
        // As in KMS, rotating on demand leaves the automatic schedule as it was.
        self.rotate(&kek.key_id, false).await.map(|_| ())
    }
}

/// Backing material `version` (≥ 1) of key `key_id`: HMAC-SHA256 under the master key, so it is
/// as secret as the sealed version 0 and independent of every other version.
fn derive_material(master: &[u8; 32], key_id: &str, version: u32) -> Zeroizing<[u8; 32]> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..master.len()].copy_from_slice(master);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
    mac.update(MATERIAL_DOMAIN);
    mac.update(key_id.as_bytes());
    mac.update(&[0]);
    mac.update(&version.to_be_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn wrap_aad(context: &KeyContext) -> Vec<u8> {
    [WRAP_AAD_DOMAIN, &context.canonical_bytes()].concat()
}

fn kek_aad(key_id: &str) -> Vec<u8> {
    [KEK_AAD_DOMAIN, key_id.as_bytes()].concat()
}

async fn load_or_create_master(path: &Path) -> Result<Zeroizing<[u8; 32]>, KmsError> {
    if !tokio::fs::try_exists(path).await.map_err(io)? {
        let fresh = DataKey::random().map_err(internal)?;
        create_private(path, fresh.expose_secret()).await?;
    }
    // Whether we or a concurrent process created it, what is on disk now is the master key.
    let bytes = Zeroizing::new(tokio::fs::read(path).await.map_err(io)?);
    let key: [u8; DATA_KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        KmsError::new(
            KmsFailure::InvalidRequest,
            format!("{} is not a 32-byte master key", path.display()),
        )
    })?;
    Ok(Zeroizing::new(key))
}

/// Creates a mode-0600 file unless it exists. The bytes go to a unique temp file first and are
/// hard-linked into place, so a concurrent reader never sees a partial file.
async fn create_private(path: &Path, bytes: &[u8]) -> Result<(), KmsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path.to_path_buf();
    let bytes = Zeroizing::new(bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        let linked = std::fs::hard_link(&temp, &path);
        std::fs::remove_file(&temp)?;
        match linked {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })
    .await
    .map_err(internal)?
    .map_err(io)
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), KmsError> {
    let temp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
    tokio::fs::write(&temp, bytes).await.map_err(io)?;
    tokio::fs::rename(&temp, path).await.map_err(io)
}

fn io(e: std::io::Error) -> KmsError {
    KmsError::new(KmsFailure::ServiceInternal, format!("local key store: {e}"))
}

fn internal(e: impl std::fmt::Display) -> KmsError {
    KmsError::new(KmsFailure::ServiceInternal, format!("local key store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        Dir(std::env::temp_dir().join(format!("byok-local-rot-{}", uuid::Uuid::new_v4().simple())))
    }
    fn context(org: &str) -> KeyContext {
        KeyContext::new([("organization_id", org)]).unwrap()
    }

    #[tokio::test]
    async fn rotation_keeps_every_earlier_dek_readable_and_wraps_new_ones_under_new_material() {
        let dir = dir();
        let kms = LocalKms::open(&dir.0).await.unwrap();
        let kek = KekRef::platform(kms.create_key("t").await.unwrap());
        let ctx = context("org_rot");
        let before = kms.generate_data_key(&kek, &ctx).await.unwrap();
        assert!(
            before.wrapped.starts_with(WRAP_MAGIC),
            "unrotated keys keep the v1 format"
        );
        kms.rotate_key_on_demand(&kek).await.unwrap();
        let after = kms.generate_data_key(&kek, &ctx).await.unwrap();
        assert!(after.wrapped.starts_with(WRAP_MAGIC_VERSIONED));
        kms.rotate_key_on_demand(&kek).await.unwrap();
        for generated in [&before, &after] {
            let opened = kms.decrypt(&kek, &generated.wrapped, &ctx).await.unwrap();
            assert_eq!(opened.expose_secret(), generated.key.expose_secret());
        }
        // Material versions differ: the version-1 wrap relabelled as version 2 does not open.
        let mut relabelled = after.wrapped.clone();
        relabelled[WRAP_MAGIC.len() + UUID_LEN + VERSION_LEN - 1] = 2;
        assert_eq!(
            kms.decrypt(&kek, &relabelled, &ctx)
                .await
                .unwrap_err()
                .failure,
            KmsFailure::InvalidCiphertext
        );
        // A reopened provider (another process) derives the same materials.
        let reopened = LocalKms::open(&dir.0).await.unwrap();
        let opened = reopened.decrypt(&kek, &after.wrapped, &ctx).await.unwrap();
        assert_eq!(opened.expose_secret(), after.key.expose_secret());
    }

    #[tokio::test]
    async fn a_key_file_written_before_rotation_existed_still_loads_and_rotates() {
        let dir = dir();
        let kms = LocalKms::open(&dir.0).await.unwrap();
        let id = kms.create_key("t").await.unwrap();
        let kek = KekRef::platform(&id);
        let ctx = context("org_old");
        let old = kms.generate_data_key(&kek, &ctx).await.unwrap();
        // Exactly the fields an earlier release wrote.
        let path = kms.key_path(&id).unwrap();
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut keys: Vec<&String> = file.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["description", "enabled", "id", "sealed"]);
        let status = kms.key_rotation_status(&kek).await.unwrap();
        assert_eq!(
            status,
            RotationStatus {
                enabled: false,
                period_days: None,
                next_rotation: None
            }
        );
        assert_eq!(
            kms.enable_key_rotation(&kek, 30).await.unwrap_err().failure,
            KmsFailure::InvalidRequest
        );
        kms.enable_key_rotation(&kek, 365).await.unwrap();
        let status = kms.key_rotation_status(&kek).await.unwrap();
        assert!(
            status.enabled && status.period_days == Some(365) && status.next_rotation.is_some()
        );
        kms.rotate_key_on_demand(&kek).await.unwrap();
        let opened = kms.decrypt(&kek, &old.wrapped, &ctx).await.unwrap();
        assert_eq!(opened.expose_secret(), old.key.expose_secret());
    }

    #[tokio::test]
    async fn automatic_rotation_happens_on_the_first_wrap_after_the_period() {
        let dir = dir();
        let kms = LocalKms::open(&dir.0).await.unwrap();
        let id = kms.create_key("t").await.unwrap();
        let kek = KekRef::platform(&id);
        let ctx = context("org_auto");
        kms.enable_key_rotation(&kek, 90).await.unwrap();
        let first = kms.generate_data_key(&kek, &ctx).await.unwrap();
        assert!(first.wrapped.starts_with(WRAP_MAGIC), "not due yet");
        // The period started 91 days ago.
        let path = kms.key_path(&id).unwrap();
        let mut file = kms.read_key_file(&path).await.unwrap();
        file.rotation_since_unix = Some(unix_now() - 91 * DAY_SECONDS);
        assert!(file.rotation_due(unix_now()));
        write_atomically(&path, &serde_json::to_vec(&file).unwrap())
            .await
            .unwrap();
        let second = kms.generate_data_key(&kek, &ctx).await.unwrap();
        assert!(second.wrapped.starts_with(WRAP_MAGIC_VERSIONED), "rotated");
        let file = kms.read_key_file(&path).await.unwrap();
        assert_eq!(file.version, 1);
        assert!(!file.rotation_due(unix_now()), "the period starts again");
        for generated in [&first, &second] {
            let opened = kms.decrypt(&kek, &generated.wrapped, &ctx).await.unwrap();
            assert_eq!(opened.expose_secret(), generated.key.expose_secret());
        }
    }
}
