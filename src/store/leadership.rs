//! Leadership among the instances sharing one database, for work exactly one of them should do
//! (the key-state watcher's KMS polling). On PostgreSQL it is a session-level advisory lock held
//! on a connection of its own; on SQLite the one process always leads.
//!
//! Why an advisory lock rather than a lease row: the lock goes with its connection, so a leader
//! that dies (crash, `kill -9`, OOM) frees it as soon as the server sees the socket close (at once
//! on a clean TCP close), with no expiry to wait out and no write per interval. The leader checks
//! its connection on every pass: a lost connection is lost leadership, and it stops polling until
//! it wins the lock again. A host that vanishes without closing its sockets is found by the
//! server's TCP keepalives, which this connection sets short ([`KEEPALIVE`]): detection in
//! about 11 s instead of the kernel's two-hour default. A follower keeps the connection it lost
//! with ([`Contender`]) and tries again on it, rather than opening one per attempt. (A
//! transaction-pooling proxy between the broker and PostgreSQL would break session locks; the
//! broker must reach PostgreSQL directly or through a session-pooling one.)

use super::sql::{NO_IDLE_SESSION_TIMEOUT, PostgresSql, Sql, args};
use super::{Readers, Store, StoreError};

/// The first key of the two-key advisory lock space ("byok"); the second is the hashed name.
/// The migration lock uses the one-key (bigint) space, which never collides with this one.
const LEADER_LOCK_CLASS: i32 = 0x6279_6f6b;

/// Server-side keepalives on the leader's connection: first probe after 5 s idle, then every
/// 2 s, dead after 3 unanswered probes. Per-session settings any role may change.
const KEEPALIVE: &str =
    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3";

/// Held while this instance leads; dropping it gives leadership up (its connection closes).
pub struct Leadership {
    held: Held,
}

enum Held {
    /// SQLite: one process, always the leader.
    Sole,
    /// The connection holding the advisory lock (`None` only while moved to a blocking thread).
    Postgres(Option<Box<PostgresSql>>),
}

/// A connection that tried for leadership and lost, kept for the next attempt (if it has died
/// meanwhile, that attempt fails and the one after opens a new connection).
pub struct Contender(Box<PostgresSql>);

/// What an attempt at leadership came to.
pub enum Attempt {
    Leads(Leadership),
    /// Another instance leads; try again later with this connection (`None` on SQLite, never).
    Follows(Contender),
}

impl Store {
    /// Leadership of `name` unless another instance holds it; `contender` is the connection an
    /// earlier lost attempt kept (a new one is opened without it, or if it fails).
    pub async fn try_lead(
        &self,
        name: &str,
        contender: Option<Contender>,
    ) -> Result<Attempt, StoreError> {
        let connector = match &self.readers {
            Readers::Sqlite { .. } => {
                return Ok(Attempt::Leads(Leadership { held: Held::Sole }));
            }
            Readers::Postgres(connector) => connector.clone(),
        };
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut sql = match contender {
                Some(Contender(sql)) => sql,
                None => {
                    // Its own connection, outside the pool: the lock lives as long as the session.
                    let mut sql = Box::new(connector.dedicated()?);
                    if let Err(e) = sql.batch(KEEPALIVE) {
                        // Only slower detection of a vanished host; leading still works.
                        tracing::warn!(error = %e, "could not set keepalives on the leader connection");
                    }
                    if let Err(e) = sql.batch(NO_IDLE_SESSION_TIMEOUT) {
                        // Only a server-wide idle_session_timeout could end the lock's session.
                        tracing::warn!(error = %e, "could not turn off idle_session_timeout on the leader connection");
                    }
                    sql
                }
            };
            let won: bool = (sql.as_mut() as &mut dyn Sql)
                .query_one(
                    "SELECT pg_try_advisory_lock(?1, hashtext(?2))",
                    args![LEADER_LOCK_CLASS, name],
                )?
                .get(0)?;
            Ok(if won {
                Attempt::Leads(Leadership {
                    held: Held::Postgres(Some(sql)),
                })
            } else {
                Attempt::Follows(Contender(sql))
            })
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

impl Leadership {
    /// Whether this instance still leads: the lock's connection still answers (a session lock is
    /// held until its session ends). `false` is final: drop it and try to lead again.
    pub async fn confirm(&mut self) -> bool {
        let Held::Postgres(slot) = &mut self.held else {
            return true;
        };
        let Some(mut sql) = slot.take() else {
            return false;
        };
        let checked = tokio::task::spawn_blocking(move || {
            let alive = (sql.as_mut() as &mut dyn Sql)
                .query_one("SELECT 1", &[])
                .is_ok();
            (alive, sql)
        })
        .await;
        match checked {
            Ok((true, sql)) => {
                *slot = Some(sql);
                true
            }
            // The connection (and the lock with it) is dropped: closed if it was not already.
            _ => false,
        }
    }
}
