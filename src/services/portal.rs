//! The admin portal a tenant's IT admin opens from a link (WorkOS's `POST /portal/generate_link`,
//! intent `bring_your_own_key`): single-use links, the sessions they start, and the audit events
//! of both. A session is bound to one organization; what it may do with BYOK keys is decided in
//! `http::portal`, on top of the BYOK services. Secrets (link tokens, session cookies) are 32
//! bytes from the OS RNG; only their SHA-256 hashes are stored, and they are never logged.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::audit::{self, AuditLog};
use crate::auth::Principal;
use crate::config::PortalConfig;
use crate::context::{KeyContext, hex};
use crate::error::{Error, ErrorCode};
use crate::services::actor::Actor;
use crate::store::{PortalLinkRecord, PortalSessionRecord, Store};
use crate::timestamp::Timestamp;

/// The only intent this broker serves.
pub const INTENT_BYOK: &str = "bring_your_own_key";
/// Longest `return_url` / `success_url` accepted.
const MAX_URL_CHARS: usize = 2048;

/// A session as a request sees it: the organization it may act for.
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub id: String,
    pub organization_id: String,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
}

impl PortalSession {
    /// The audit actor's name: the organization, not a person (the broker knows no one's name).
    pub fn actor_name(&self) -> String {
        format!("portal session of {}", self.organization_id)
    }
}

/// A session just started from a link: its cookie secret (shown once, to the browser) and itself.
pub struct OpenedSession {
    pub secret: Zeroizing<String>,
    pub session: PortalSession,
}

pub struct Portal {
    store: Store,
    audit: AuditLog,
    config: PortalConfig,
}

fn random_secret(prefix: &str) -> Result<Zeroizing<String>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| Error::Internal(format!("OS random generator failed: {e}")))?;
    Ok(Zeroizing::new(format!("{prefix}{}", hex(bytes.as_ref()))))
}

/// SHA-256 of a secret under a purpose label, so one secret's hashes for two purposes differ.
fn digest(purpose: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(purpose.as_bytes());
    hasher.update([0]);
    hasher.update(secret.as_bytes());
    hex(&hasher.finalize())
}

fn check_url(name: &str, url: Option<String>) -> Result<Option<String>, Error> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = url.len() <= MAX_URL_CHARS
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(Error::invalid(
            ErrorCode::InvalidUrl,
            format!("{name} must be an absolute http(s) URL of at most {MAX_URL_CHARS} characters"),
        ));
    }
    Ok(Some(url))
}

impl Portal {
    pub fn new(store: Store, audit: AuditLog, config: PortalConfig) -> Self {
        Self {
            store,
            audit,
            config,
        }
    }

    pub fn config(&self) -> &PortalConfig {
        &self.config
    }

    /// A new single-use link for `organization`; `base_url` is where the portal is served.
    pub async fn generate_link(
        &self,
        admin: &Principal,
        organization: &str,
        intent: &str,
        return_url: Option<String>,
        success_url: Option<String>,
        base_url: &str,
    ) -> Result<Zeroizing<String>, Error> {
        if intent != INTENT_BYOK {
            return Err(Error::invalid(
                ErrorCode::InvalidIntent,
                format!(
                    "intent must be \"{INTENT_BYOK}\": this broker's portal configures bring-your-own-key only"
                ),
            ));
        }
        // The same rules as an `organization_id` context value (1-500 characters).
        KeyContext::new([("organization_id", organization)])?;
        let return_url = check_url("return_url", return_url)?;
        let success_url = check_url("success_url", success_url)?;
        let token = random_secret("ptl_")?;
        self.store
            .insert_portal_link(
                PortalLinkRecord {
                    token_hash: digest("portal-link", &token),
                    organization_id: organization.to_owned(),
                    intent: intent.to_owned(),
                    return_url,
                    success_url,
                },
                self.config.link_ttl,
            )
            .await?;
        let expires_at =
            Timestamp(Timestamp::now().0.saturating_add(ttl_micros(&self.config))).to_rfc3339();
        self.audit
            .record(audit::event(
                Some(admin),
                "portal.link.generated",
                Some(organization),
                json!({"organization_id": organization, "intent": intent, "expires_at": expires_at}),
            ))
            .await?;
        Ok(Zeroizing::new(format!(
            "{base_url}/portal/launch?token={}",
            token.as_str()
        )))
    }

    /// Consumes the link's token and starts a session; `None` when the token is unknown, used
    /// or expired (told apart to no one).
    pub async fn open(&self, token: &str) -> Result<Option<OpenedSession>, Error> {
        let Some(link) = self
            .store
            .consume_portal_link(&digest("portal-link", token))
            .await?
        else {
            return Ok(None);
        };
        let secret = random_secret("pts_")?;
        let id = format!("portal_session_{}", uuid::Uuid::new_v4().simple());
        let record = PortalSessionRecord {
            id: id.clone(),
            organization_id: link.organization_id,
            return_url: link.return_url,
            success_url: link.success_url,
        };
        self.store
            .insert_portal_session(digest("portal-session", &secret), record.clone())
            .await?;
        let session = PortalSession {
            id: record.id,
            organization_id: record.organization_id,
            return_url: record.return_url,
            success_url: record.success_url,
        };
        self.record(&session, "portal.session.started", json!({}))
            .await?;
        Ok(Some(OpenedSession { secret, session }))
    }

    /// The live session the cookie secret names; its idle clock restarts.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<PortalSession>, Error> {
        let record = self
            .store
            .touch_portal_session(&digest("portal-session", secret), self.config.session_idle)
            .await?;
        Ok(record.map(|r| PortalSession {
            id: r.id,
            organization_id: r.organization_id,
            return_url: r.return_url,
            success_url: r.success_url,
        }))
    }

    /// Ends the session the cookie secret names.
    pub async fn sign_out(&self, secret: &str, session: &PortalSession) -> Result<(), Error> {
        self.store
            .end_portal_session(&digest("portal-session", secret))
            .await?;
        self.record(session, "portal.session.ended", json!({}))
            .await
    }

    /// The session's CSRF token: derived from its secret, so it needs no storage and another
    /// site, which cannot read the cookie, cannot compute it.
    pub fn csrf_token(secret: &str) -> String {
        digest("portal-csrf", secret)
    }

    /// Whether `presented` is the session's CSRF token (constant-time).
    pub fn csrf_matches(secret: &str, presented: &str) -> bool {
        Self::csrf_token(secret)
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    }

    /// Records an event with the session as actor (`actor_source: "portal"`).
    pub async fn record(
        &self,
        session: &PortalSession,
        name: &str,
        fields: Value,
    ) -> Result<(), Error> {
        self.audit
            .record(Actor::Portal(session).event(name, Some(&session.organization_id), fields))
            .await
    }
}

fn ttl_micros(config: &PortalConfig) -> i64 {
    i64::try_from(config.link_ttl.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_give_different_digests_and_csrf_checks_the_whole_token() {
        assert_ne!(digest("portal-link", "s"), digest("portal-session", "s"));
        let token = Portal::csrf_token("pts_secret");
        assert!(Portal::csrf_matches("pts_secret", &token));
        assert!(!Portal::csrf_matches("pts_other", &token));
        assert!(!Portal::csrf_matches("pts_secret", &token[..10]));
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert_eq!(check_url("u", None).unwrap(), None);
        assert!(check_url("u", Some("https://app.example/done".into())).is_ok());
        for bad in [
            "javascript:alert(1)",
            "//evil.example",
            "https:///x",
            "https://a b",
        ] {
            assert!(check_url("u", Some(bad.into())).is_err(), "{bad}");
        }
    }
}
