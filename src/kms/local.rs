//! Embedded key provider for the zero-setup default: KEKs are random AES-256 keys sealed under a
//! master key in the data directory. It mirrors KMS semantics the broker relies on (key id pinned,
//! encryption context bound, disabled keys refused, alias creation race-safe across processes).
//! It is for development and single-node use; production tenants use AWS KMS.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead;
use crate::context::KeyContext;
use crate::data_key::{DATA_KEY_LEN, DataKey};
use crate::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, KmsFailure,
};

const KEY_ID_PREFIX: &str = "local/";
const WRAP_MAGIC: &[u8; 4] = b"BBL1";
const UUID_LEN: usize = 36;
const WRAP_AAD_DOMAIN: &[u8] = b"byok-broker/local-kms/wrap/v1\0";
const KEK_AAD_DOMAIN: &[u8] = b"byok-broker/local-kms/kek/v1\0";

pub struct LocalKms {
    root: PathBuf,
    master: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    id: String,
    description: String,
    enabled: bool,
    /// The KEK sealed under the master key, base64.
    sealed: String,
}

struct LoadedKek {
    material: Zeroizing<[u8; 32]>,
    enabled: bool,
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

    async fn load(&self, key_id: &str) -> Result<LoadedKek, KmsError> {
        let file = self.read_key_file(&self.key_path(key_id)?).await?;
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
        Ok(LoadedKek {
            material: Zeroizing::new(material),
            enabled: file.enabled,
        })
    }

    async fn load_enabled(&self, key_id: &str) -> Result<LoadedKek, KmsError> {
        let kek = self.load(key_id).await?;
        if !kek.enabled {
            return Err(KmsError::new(
                KmsFailure::KeyDisabled,
                format!("{key_id} is disabled"),
            ));
        }
        Ok(kek)
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
        let mut out = Vec::with_capacity(WRAP_MAGIC.len() + UUID_LEN + sealed.len());
        out.extend_from_slice(WRAP_MAGIC);
        out.extend_from_slice(uuid.as_bytes());
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
        let rest = wrapped
            .strip_prefix(WRAP_MAGIC.as_slice())
            .ok_or_else(invalid)?;
        if rest.len() < UUID_LEN {
            return Err(invalid());
        }
        let (uuid, sealed) = rest.split_at(UUID_LEN);
        let made_by = format!("{KEY_ID_PREFIX}{}", String::from_utf8_lossy(uuid));
        if made_by != kek_id {
            return Err(KmsError::new(
                KmsFailure::IncorrectKey,
                format!("ciphertext was made by {made_by}, not {kek_id}"),
            ));
        }
        let kek = self.load_enabled(kek_id).await?;
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
        let loaded = self.load_enabled(&kek.key_id).await?;
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
        let loaded = self.load_enabled(&kek.key_id).await?;
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
