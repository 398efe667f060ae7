//! The admin portal's links and sessions (migration 15). Only SHA-256 hashes of their secrets are
//! stored, so a copy of the database opens no session. Expiry is judged on the database's clock,
//! so instances with skewed clocks agree; a link is consumed by one conditional update, so two
//! instances cannot both open it.

use std::time::Duration;

use super::sql::args;
use super::{Store, StoreError};

/// A link as generated: what opening it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalLinkRecord {
    pub token_hash: String,
    pub organization_id: String,
    pub intent: String,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
}

/// A live session: its public id (audit actor) and organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSessionRecord {
    pub id: String,
    pub organization_id: String,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Links and ended or idle sessions are kept this long past their end, then deleted.
const KEEP_ENDED_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Stores a new link that expires `ttl` from now.
    pub async fn insert_portal_link(
        &self,
        link: PortalLinkRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ttl = millis(ttl);
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            tx.execute(
                &format!("DELETE FROM portal_links WHERE expires_ms < {now} - ?1"),
                args![KEEP_ENDED_MS],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO portal_links (token_hash, organization_id, intent, return_url, success_url, expires_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, {now} + ?6)"
                ),
                args![
                    link.token_hash,
                    link.organization_id,
                    link.intent,
                    link.return_url,
                    link.success_url,
                    ttl
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks the link used and returns it, if it exists, is unused and has not expired; `None`
    /// otherwise (the three are not told apart to the caller).
    pub async fn consume_portal_link(
        &self,
        token_hash: &str,
    ) -> Result<Option<PortalLinkRecord>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            let changed = tx.execute(
                &format!(
                    "UPDATE portal_links SET used_ms = {now} \
                     WHERE token_hash = ?1 AND used_ms IS NULL AND expires_ms > {now}"
                ),
                args![token_hash],
            )?;
            if changed != 1 {
                return Ok(None);
            }
            let row = tx.query_one(
                "SELECT organization_id, intent, return_url, success_url FROM portal_links WHERE token_hash = ?1",
                args![token_hash],
            )?;
            Ok(Some(PortalLinkRecord {
                token_hash,
                organization_id: row.get(0)?,
                intent: row.get(1)?,
                return_url: row.get(2)?,
                success_url: row.get(3)?,
            }))
        })
        .await
    }

    /// Starts a session (its secret's hash and its public id).
    pub async fn insert_portal_session(
        &self,
        id_hash: String,
        session: PortalSessionRecord,
    ) -> Result<(), StoreError> {
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            tx.execute(
                &format!(
                    "DELETE FROM portal_sessions WHERE COALESCE(ended_ms, last_seen_ms) < {now} - ?1"
                ),
                args![KEEP_ENDED_MS],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO portal_sessions (id_hash, id, organization_id, return_url, success_url, created_ms, last_seen_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, {now}, {now})"
                ),
                args![
                    id_hash,
                    session.id,
                    session.organization_id,
                    session.return_url,
                    session.success_url
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// The session, if it has not ended and was used within `idle`; its idle clock restarts.
    pub async fn touch_portal_session(
        &self,
        id_hash: &str,
        idle: Duration,
    ) -> Result<Option<PortalSessionRecord>, StoreError> {
        let id_hash = id_hash.to_owned();
        let idle = millis(idle);
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            let changed = tx.execute(
                &format!(
                    "UPDATE portal_sessions SET last_seen_ms = {now} \
                     WHERE id_hash = ?1 AND ended_ms IS NULL AND last_seen_ms > {now} - ?2"
                ),
                args![id_hash, idle],
            )?;
            if changed != 1 {
                return Ok(None);
            }
            let row = tx.query_one(
                "SELECT id, organization_id, return_url, success_url FROM portal_sessions WHERE id_hash = ?1",
                args![id_hash],
            )?;
            Ok(Some(PortalSessionRecord {
                id: row.get(0)?,
                organization_id: row.get(1)?,
                return_url: row.get(2)?,
                success_url: row.get(3)?,
            }))
        })
        .await
    }

    /// Ends the session (sign out); later requests with its cookie are refused.
    pub async fn end_portal_session(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_owned();
        self.run(move |tx| {
            let now = tx.dialect().now_ms();
            tx.execute(
                &format!("UPDATE portal_sessions SET ended_ms = {now} WHERE id_hash = ?1"),
                args![id_hash],
            )?;
            Ok(())
        })
        .await
    }
}
