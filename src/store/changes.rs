//! What other broker processes on the same PostgreSQL database changed: the revisions of the
//! state brokers cache (BYOK routing, verified API keys), and a listener for the notifications
//! the migration-11 triggers send when a change to either commits. The listener has a connection
//! of its own, outside the pool: LISTEN belongs to a session, and a pooled connection would carry
//! it to whoever checks it out next. On SQLite there is one process and nothing to listen to.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::migrations::CHANGE_CHANNEL;
use super::postgres_url::PostgresTarget;
use super::sql::{NO_IDLE_SESSION_TIMEOUT, store_error};
use super::{Store, StoreError};

/// The listener connection's `application_name`, as `pg_stat_activity` shows it: how an operator
/// (or a test) tells it from the pool's connections.
pub const LISTENER_APPLICATION_NAME: &str = "byok-broker-listener";

/// The stored revisions of the state a broker caches. Each only grows, in the transaction of
/// the change it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revisions {
    pub byok: u64,
    pub api_keys: u64,
}

/// Which cached state a committed change made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Byok,
    ApiKeys,
    /// A payload this broker does not know (a newer broker's trigger): treat everything as stale.
    Unknown,
}

impl Change {
    fn from_payload(payload: &str) -> Self {
        match payload {
            "byok" => Change::Byok,
            "api_keys" => Change::ApiKeys,
            _ => Change::Unknown,
        }
    }
}

/// How the listener connects: the pool's settings under another `application_name`.
pub(super) struct ListenTarget {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    /// Bounds the whole connect (TCP, TLS, authentication, LISTEN), not only the TCP part the
    /// driver's own timeout covers.
    bound: Duration,
}

impl ListenTarget {
    pub(super) fn new(target: &PostgresTarget) -> Self {
        let mut config = target.config.clone();
        config.application_name(LISTENER_APPLICATION_NAME);
        Self {
            config,
            tls: target.tls.clone(),
            bound: target.connect_timeout,
        }
    }

    async fn listen(&self) -> Result<ChangeListener, StoreError> {
        let (client, mut connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| store_error(&e))?;
        let mut messages: Messages = Box::pin(futures_util::stream::poll_fn(move |cx| {
            connection.poll_message(cx)
        }));
        {
            // The LISTEN's answer arrives only while the connection is driven: drive it alongside.
            // A notification read here is dropped: the caller refreshes everything once
            // listening, which reads state at least as new as anything announced meanwhile.
            let statement = format!("{NO_IDLE_SESSION_TIMEOUT}; LISTEN {CHANGE_CHANNEL}");
            let listen = client.batch_execute(&statement);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => {
                        done.map_err(|e| store_error(&e))?;
                        break;
                    }
                    message = messages.next() => {
                        settle(message)?;
                    }
                }
            }
        }
        Ok(ChangeListener {
            _client: client,
            messages,
        })
    }
}

type Messages =
    Pin<Box<dyn Stream<Item = Result<AsyncMessage, tokio_postgres::Error>> + Send + 'static>>;

/// A message that is not a notification is skipped; a failed or closed connection is an error.
fn settle(
    message: Option<Result<AsyncMessage, tokio_postgres::Error>>,
) -> Result<Option<Change>, StoreError> {
    match message {
        Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANGE_CHANNEL => {
            Ok(Some(Change::from_payload(n.payload())))
        }
        Some(Ok(_)) => Ok(None),
        Some(Err(e)) => Err(store_error(&e)),
        None => Err(StoreError::Unavailable(
            "the change listener's connection closed".into(),
        )),
    }
}

/// A session listening for committed changes. Dropping it closes its connection.
pub struct ChangeListener {
    /// Kept alive: the connection ends once its client is gone.
    _client: tokio_postgres::Client,
    messages: Messages,
}

impl ChangeListener {
    /// The next committed change; an error once the connection is lost (listen again, and treat
    /// everything as stale: what was announced meanwhile is gone). Cancel safe: a notification
    /// is taken from the connection only when it is returned.
    pub async fn next(&mut self) -> Result<Change, StoreError> {
        loop {
            if let Some(change) = settle(self.messages.next().await)? {
                return Ok(change);
            }
        }
    }
}

const REVISIONS: &str =
    "SELECT (SELECT revision FROM byok_revision), (SELECT revision FROM api_key_revision)";

impl Store {
    /// The stored revisions (two one-row tables: cheap enough to ask every few hundred ms).
    pub async fn revisions(&self) -> Result<Revisions, StoreError> {
        self.read(|c| {
            let row = c.query_one(REVISIONS, &[])?;
            Ok(Revisions {
                byok: row.get(0)?,
                api_keys: row.get(1)?,
            })
        })
        .await
    }

    /// Whether other processes may change this database behind this one's caches (PostgreSQL);
    /// an embedded SQLite file has one process.
    pub fn is_shared(&self) -> bool {
        self.listen.is_some()
    }

    /// Opens a session that receives every change committed from now on; `None` on SQLite.
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Some(target) = &self.listen else {
            return Ok(None);
        };
        match tokio::time::timeout(target.bound, target.listen()).await {
            Ok(listener) => listener.map(Some),
            Err(_) => Err(StoreError::Unavailable(
                "the change listener could not connect within the connect timeout".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_stale_cache_and_anything_else_means_everything() {
        assert_eq!(Change::from_payload("byok"), Change::Byok);
        assert_eq!(Change::from_payload("api_keys"), Change::ApiKeys);
        assert_eq!(Change::from_payload("objects"), Change::Unknown);
    }

    #[tokio::test]
    async fn a_revocation_bumps_the_api_key_revision_and_nothing_listens_on_sqlite() {
        let path =
            std::env::temp_dir().join(format!("byok-changes-{}.db", uuid::Uuid::new_v4().simple()));
        let store = Store::open(&path).await.unwrap();
        assert!(!store.is_shared());
        assert!(store.listen_for_changes().await.unwrap().is_none());
        store
            .insert_api_key(crate::store::NewApiKey {
                id: "key_1".into(),
                name: "k".into(),
                role: "app".into(),
                scope_json: None,
                key_hash: [7; 32],
            })
            .await
            .unwrap();
        let before = store.revisions().await.unwrap();
        store.revoke_api_key("key_1").await.unwrap();
        let after = store.revisions().await.unwrap();
        assert!(after.api_keys > before.api_keys, "{before:?} -> {after:?}");
        assert_eq!(after.byok, before.byok, "an API key is no BYOK change");
        store.close().await.unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
