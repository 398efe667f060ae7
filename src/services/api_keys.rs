//! API key use cases: verify a bearer token (through the verified-key cache), create, list and
//! revoke keys (checking a new key's name, role and scope). A new key's token leaves this service once, in `create_api_key`'s result; the
//! store keeps only its hash. A revocation clears the verified-key cache before it returns.

use serde_json::json;
use zeroize::Zeroizing;

use crate::audit::{self, AuditLog};
pub use crate::auth::Rejection;
use crate::auth::{self, Authenticator, Principal, Role};
use crate::context::KeyContext;
use crate::context::json::ContextJson;
use crate::error::{Error, ErrorCode};
pub use crate::store::ApiKeyRecord;
use crate::store::{NewApiKey, Store};

/// The longest API key name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// A create request that passed its checks.
struct NewKeyRequest<'a> {
    name: &'a str,
    role: Role,
    scope: Option<KeyContext>,
}

impl<'a> NewKeyRequest<'a> {
    fn check(name: &'a str, role: &str, scope: Option<ContextJson>) -> Result<Self, Error> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(Error::invalid(
                ErrorCode::InvalidName,
                format!("name must be 1-{MAX_NAME_CHARS} characters"),
            ));
        }
        let role = match role {
            "app" => Role::App,
            "admin" => Role::Admin,
            other => {
                return Err(Error::invalid(
                    ErrorCode::InvalidRole,
                    format!("role must be \"app\" or \"admin\", not {other:?}"),
                ));
            }
        };
        let scope = match scope {
            None => None,
            // An admin key reaches no data, so a scope on one would promise a limit it cannot have.
            Some(_) if role == Role::Admin => {
                return Err(Error::invalid(
                    ErrorCode::InvalidScope,
                    "only app keys can be scoped",
                ));
            }
            // A scope is a context selector: the same rules as a key context.
            Some(value) => Some(value.into_context()?),
        };
        Ok(Self { name, role, scope })
    }
}

pub struct ApiKeys {
    store: Store,
    authenticator: Authenticator,
    /// Creations and revocations are recorded with the admin key that made them.
    audit: AuditLog,
}

impl ApiKeys {
    pub fn new(store: Store, audit: AuditLog) -> Self {
        Self {
            authenticator: Authenticator::new(store.clone()),
            store,
            audit,
        }
    }

    /// The verified-key cache, for the coherence worker to empty on another broker's revocation.
    pub fn verified_keys(&self) -> auth::VerifiedKeys {
        self.authenticator.verified_keys()
    }

    /// Resolves an `Authorization` header value to a principal, or `Unauthorized`.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, Error> {
        self.authenticator.authenticate(header).await
    }

    /// Like [`Self::authenticate`], saying why a caller is refused (for the audit trail).
    pub async fn identify(&self, header: Option<&str>) -> Result<Principal, Rejection> {
        self.authenticator.identify(header).await
    }

    /// Creates a key with a fresh token, as requested: `name` 1-100 characters (trimmed), `role`
    /// `"app"` or `"admin"`, `scope` a context selector (app keys only; `None` is unscoped).
    pub async fn create_api_key(
        &self,
        admin: &Principal,
        name: &str,
        role: &str,
        scope: Option<ContextJson>,
    ) -> Result<(ApiKeyRecord, Zeroizing<String>), Error> {
        let NewKeyRequest { name, role, scope } = NewKeyRequest::check(name, role, scope)?;
        // A scoped key's organization sees its creation among its own events.
        let organization = scope
            .as_ref()
            .and_then(|s| s.get("organization_id"))
            .map(str::to_owned);
        let scope_json = scope
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let token = auth::generate_token(role)?;
        let id = format!("key_{}", uuid::Uuid::new_v4().simple());
        self.store
            .insert_api_key(NewApiKey {
                id: id.clone(),
                name: name.to_owned(),
                role: role.as_str().to_owned(),
                scope_json,
                key_hash: auth::hash_token(&token),
            })
            .await?;
        let record = self
            .store
            .find_api_key(&id)
            .await?
            .ok_or(Error::Internal("created key vanished".into()))?;
        // Never the token: the key's id, name, role and scope only.
        let fields = json!({"api_key_id": record.id, "name": record.name, "role": record.role, "scope": scope});
        self.audit
            .record(audit::event(
                Some(admin),
                "api_key.created",
                organization.as_deref(),
                fields,
            ))
            .await?;
        Ok((record, token))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        Ok(self.store.list_api_keys().await?)
    }

    /// Revokes a key (again is a no-op, recorded again) and returns it as it is now.
    pub async fn revoke_api_key(&self, admin: &Principal, id: &str) -> Result<ApiKeyRecord, Error> {
        self.store.revoke_api_key(id).await?;
        // The key stops working on this broker now, not when its cached verification expires.
        self.authenticator.forget_all();
        let record = self
            .store
            .find_api_key(id)
            .await?
            .ok_or(Error::NotFound("API key"))?;
        let organization = record
            .scope_json
            .as_deref()
            .and_then(|json| serde_json::from_str::<KeyContext>(json).ok())
            .and_then(|scope| scope.get("organization_id").map(str::to_owned));
        let fields = json!({"api_key_id": record.id, "name": record.name, "role": record.role, "revoked_at": record.revoked_at});
        self.audit
            .record(audit::event(
                Some(admin),
                "api_key.revoked",
                organization.as_deref(),
                fields,
            ))
            .await?;
        Ok(record)
    }
}

#[cfg(test)]
#[path = "api_keys_tests.rs"]
mod tests;
