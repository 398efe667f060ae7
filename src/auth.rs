//! API keys: `Authorization: Bearer <token>`. Tokens are 256-bit random strings stored only as
//! SHA-256 hashes and compared in constant time. Roles: `app` (data plane) and `admin` (admin
//! plane). An app key may carry a scope: a context selector every context it touches must contain.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::context::KeyContext;
use crate::error::{Error, ErrorCode};
use crate::store::{NewApiKey, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    App,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    pub scope: Option<BTreeMap<String, String>>,
    /// The subject of the client certificate the request's connection presented (a TLS listener
    /// with `tls.client_ca_file`); set per request, never cached with the key.
    pub client_certificate: Option<std::sync::Arc<str>>,
}

impl Principal {
    /// True when `context` lies inside this key's scope (always, for an unscoped key).
    pub fn may_use(&self, context: &KeyContext) -> bool {
        self.scope.as_ref().is_none_or(|scope| {
            scope
                .iter()
                .all(|(k, v)| context.get(k) == Some(v.as_str()))
        })
    }
}

/// Why a bearer token was not accepted. Never holds the token: an unknown one is described by
/// its public prefix only.
#[derive(Debug)]
pub enum Rejection {
    /// No `Authorization: Bearer` header (or an empty token).
    NoCredential,
    /// A token matching no key: `kind` is its public prefix (`bkb_app`, `bkb_admin`) or `other`.
    UnknownToken { kind: &'static str },
    /// The token of a revoked key.
    Revoked { key_id: String, name: String },
    /// The key store could not answer: not a refusal of the caller.
    Failed(Error),
}

impl Rejection {
    pub fn into_error(self) -> Error {
        match self {
            Rejection::Failed(e) => e,
            _ => Error::Unauthorized,
        }
    }
}

/// The public part of a token's format, the only part of an unknown token worth recording: a
/// guess's bytes are the secret it tries to be.
fn token_kind(token: &str) -> &'static str {
    if token.starts_with("bkb_app_") {
        "bkb_app"
    } else if token.starts_with("bkb_admin_") {
        "bkb_admin"
    } else {
        "other"
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `bkb_<role>_<43 base64url chars>`.
pub fn generate_token(role: Role) -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut_slice())
        .map_err(|_| Error::Internal("random source unavailable".into()))?;
    Ok(Zeroizing::new(format!(
        "bkb_{}_{}",
        role.as_str(),
        URL_SAFE_NO_PAD.encode(bytes.as_slice())
    )))
}

/// Compares two hashes in time independent of where they differ (only their lengths may leak).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// How long a verified key is trusted without asking the database again. A revocation through
/// this broker takes effect at once (the cache is cleared); one made through another broker on
/// the same database when the coherence worker hears of it (`services::coherence`), and at the
/// latest within this bound.
const VERIFIED_KEY_TTL: Duration = Duration::from_secs(10);

/// The verified-key cache, shared by the authenticator and whoever must empty it (a revocation,
/// the coherence worker). Clones share the entries.
#[derive(Clone)]
pub struct VerifiedKeys {
    entries: moka::sync::Cache<[u8; 32], Principal>,
    /// Bumped by every `forget_all`: a verification that read the key before a revocation and
    /// finishes after the cache was emptied must not put its stale answer back.
    generation: Arc<AtomicU64>,
}

impl VerifiedKeys {
    fn new() -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(VERIFIED_KEY_TTL)
                .build(),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    fn get(&self, hash: &[u8; 32]) -> Option<Principal> {
        self.entries.get(hash)
    }

    /// Taken before the database is asked, and handed to [`Self::remember`] with its answer.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a verification read at `generation`, unless the cache was emptied since.
    fn remember(&self, hash: [u8; 32], principal: Principal, generation: u64) {
        self.entries.insert(hash, principal);
        // Checked after the insert, so a `forget_all` racing with it either ran before the insert
        // (the generation differs: undone here) or after it (it removed the entry itself).
        if self.generation() != generation {
            self.entries.invalidate(&hash);
        }
    }

    /// Forgets every verified key (after a revocation, here or through another broker).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }
}

/// Resolves bearer tokens to principals, remembering verified keys briefly so the hot path does
/// not query the database on every request. Only successes are cached.
pub struct Authenticator {
    store: Store,
    verified: VerifiedKeys,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            verified: VerifiedKeys::new(),
        }
    }

    /// Resolves an `Authorization` header value to a principal, or `Unauthorized`.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, Error> {
        self.identify(header).await.map_err(Rejection::into_error)
    }

    /// Like [`Self::authenticate`], saying why a caller is refused, for the audit trail.
    pub async fn identify(&self, header: Option<&str>) -> Result<Principal, Rejection> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Rejection::NoCredential)?;
        let hash = hash_token(token);
        if let Some(principal) = self.verified.get(&hash) {
            return Ok(principal);
        }
        let generation = self.verified.generation();
        let unknown = || Rejection::UnknownToken {
            kind: token_kind(token),
        };
        let record = self
            .store
            .find_api_key_by_hash(hash)
            .await
            .map_err(|e| Rejection::Failed(e.into()))?
            .ok_or_else(unknown)?;
        if !constant_time_eq(&record.key_hash, &hash) {
            return Err(unknown());
        }
        if record.revoked_at.is_some() {
            // Whoever presents it holds the token: the key it names is who they claim to be.
            return Err(Rejection::Revoked {
                key_id: record.id,
                name: record.name,
            });
        }
        let role = match record.role.as_str() {
            "admin" => Role::Admin,
            _ => Role::App,
        };
        let scope =
            match record.scope_json {
                Some(json) => Some(serde_json::from_str(&json).map_err(|e| {
                    Rejection::Failed(Error::Internal(format!("api key scope: {e}")))
                })?),
                None => None,
            };
        let principal = Principal {
            key_id: record.id,
            name: record.name,
            role,
            scope,
            client_certificate: None,
        };
        self.verified.remember(hash, principal.clone(), generation);
        Ok(principal)
    }

    /// Forgets every verified key (after a revocation).
    pub fn forget_all(&self) {
        self.verified.forget_all();
    }

    /// A handle on the verified-key cache, for whoever else must empty it.
    pub fn verified_keys(&self) -> VerifiedKeys {
        self.verified.clone()
    }
}

/// Registers a key whose token the operator chose (bootstrap keys from the environment).
pub async fn register_token(
    store: &Store,
    name: &str,
    role: Role,
    token: &str,
) -> Result<(), Error> {
    if token.len() < 16 {
        return Err(Error::invalid(
            ErrorCode::WeakApiKey,
            format!("the {name} token must be at least 16 characters"),
        ));
    }
    store
        .insert_api_key(NewApiKey {
            id: format!("key_{}", uuid::Uuid::new_v4().simple()),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            scope_json: None,
            key_hash: hash_token(token),
        })
        .await?;
    Ok(())
}

/// On a first start with no keys at all, creates an app and an admin key and writes them to a
/// mode-0600 file in the data directory (never to the log). Returns the file's path if it did.
pub async fn bootstrap_if_empty(
    store: &Store,
    data_dir: &Path,
) -> Result<Option<std::path::PathBuf>, Error> {
    if store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let app = generate_token(Role::App)?;
    let admin = generate_token(Role::Admin)?;
    register_token(store, "bootstrap-app", Role::App, &app).await?;
    register_token(store, "bootstrap-admin", Role::Admin, &admin).await?;
    let path = data_dir.join("bootstrap-api-keys.txt");
    let contents = Zeroizing::new(format!(
        "# byok-broker bootstrap API keys (created on first start). Move them to a secret store.\nBYOK_BROKER_APP_KEY={}\nBYOK_BROKER_ADMIN_KEY={}\n",
        app.as_str(),
        admin.as_str()
    ));
    write_private(&path, contents.as_bytes())
        .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    Ok(Some(path))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_role_tagged() {
        let a = generate_token(Role::App).unwrap();
        let b = generate_token(Role::App).unwrap();
        assert!(a.starts_with("bkb_app_") && a.len() == 8 + 43);
        assert_ne!(*a, *b);
        assert!(
            generate_token(Role::Admin)
                .unwrap()
                .starts_with("bkb_admin_")
        );
    }

    #[test]
    fn scope_is_a_subset_match() {
        let scoped = Principal {
            key_id: "k".into(),
            name: "n".into(),
            role: Role::App,
            scope: Some([("organization_id".to_string(), "org_acme".to_string())].into()),
            client_certificate: None,
        };
        let inside =
            KeyContext::new([("organization_id", "org_acme"), ("data_type", "pii")]).unwrap();
        let outside = KeyContext::new([("organization_id", "org_other")]).unwrap();
        assert!(scoped.may_use(&inside));
        assert!(!scoped.may_use(&outside));
        assert!(
            Principal {
                scope: None,
                ..scoped
            }
            .may_use(&outside)
        );
    }

    #[test]
    fn a_verification_read_before_a_forget_all_is_not_cached_after_it() {
        let verified = VerifiedKeys::new();
        let principal = Principal {
            key_id: "k".into(),
            name: "n".into(),
            role: Role::App,
            scope: None,
            client_certificate: None,
        };
        // The key was read (not yet revoked), then revoked and the cache emptied, then the
        // verification finishes: its answer is stale and must not be served for the next 10 s.
        let read_at = verified.generation();
        verified.forget_all();
        verified.remember([1; 32], principal.clone(), read_at);
        assert!(verified.get(&[1; 32]).is_none());
        // A verification that started after the forget is cached as usual.
        verified.remember([1; 32], principal, verified.generation());
        assert!(verified.get(&[1; 32]).is_some());
    }

    #[test]
    fn an_unknown_token_is_described_by_its_public_prefix_only() {
        assert_eq!(token_kind("bkb_app_abc"), "bkb_app");
        assert_eq!(token_kind("bkb_admin_abc"), "bkb_admin");
        assert_eq!(token_kind("sk_test_123"), "other");
        assert_eq!(token_kind("bkb_"), "other");
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
