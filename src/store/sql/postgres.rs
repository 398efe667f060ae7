//! [`Sql`] on PostgreSQL through tokio-postgres and a deadpool pool. Store operations are
//! synchronous closures running on blocking threads (the writer thread, or the blocking pool for
//! reads), as on SQLite; each statement here is driven to completion on the runtime the pool
//! belongs to (`Handle::block_on` is allowed on those threads), so one query text serves both
//! backends. Statements are prepared once per connection (the pool's statement cache).

use std::error::Error as StdError;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{Dialect, Row, Sql, Value};
use crate::store::StoreError;
use crate::store::postgres_url::PostgresTarget;

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer bound to a {ty} parameter").into()),
            },
            Value::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Value::Blob(b) if <&[u8] as ToSql>::accepts(ty) => b.as_slice().to_sql(ty, out),
            Value::Text(_) | Value::Blob(_) => {
                Err(format!("a text or blob value bound to a {ty} parameter").into())
            }
        }
    }

    // Every type is accepted here and checked per value in `to_sql`, which knows the variant.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            _ if <String as FromSql>::accepts(ty) => Value::Text(String::from_sql(ty, raw)?),
            _ => return Err(format!("a {ty} column (the schema has none)").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N`. The store's statements hold no `?` in
/// literals; a bare `?` is left alone and fails to parse, loudly.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// What the store reports for a PostgreSQL failure. Only the SQLSTATE, its class and the
/// constraint or table it names: a server message or detail can quote the values of a row.
pub(in crate::store) fn store_error(e: &tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        return client_error(e);
    };
    let code = db.code();
    let named = [db.constraint(), db.table()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!("PostgreSQL error {} {named}", code.code());
    match code.code().get(..2) {
        // Connection exceptions, insufficient resources (disk full: 53100), operator
        // intervention (shutdown, restart, statement timeout), and a transaction another one
        // made fail (serialization, deadlock): all pass on a retry.
        _ if *code == SqlState::DISK_FULL => StoreError::Full(text),
        Some("08" | "53" | "57" | "40") => StoreError::Unavailable(text),
        // A NUL character in a text parameter (22021) or one the encoding lacks (22P05).
        _ if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            StoreError::UnstorableText
        }
        _ => StoreError::Database(text),
    }
}

/// A failure without a server answer. The connection kinds (closed, I/O, connect, TLS, timeout)
/// pass once the server is reachable: 503. The rest (a parameter that does not encode, a column
/// that does not decode) are bugs here, and retrying would not help: 500.
fn client_error(e: &tokio_postgres::Error) -> StoreError {
    // The kind ("error performing TLS handshake") and then its causes ("invalid peer
    // certificate: UnknownIssuer", "Connection refused"): what an operator needs to fix it.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    let connection = e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || [
            "error connecting",
            "error performing TLS",
            "timeout waiting",
            "error communicating",
        ]
        .iter()
        .any(|kind| text.starts_with(kind));
    if connection {
        StoreError::Unavailable(format!("PostgreSQL connection failed: {text}"))
    } else {
        StoreError::Internal(format!("PostgreSQL client: {text}"))
    }
}

/// The pool of one store: its connections, and the runtime that drives them.
#[derive(Clone)]
pub struct PostgresConnector {
    pool: Pool,
    handle: Handle,
    /// The client-side bound on one statement: the server's `statement_timeout` plus a margin.
    /// It is what ends a wait on a connection the network silently dropped.
    statement_bound: Duration,
}

impl PostgresConnector {
    /// Builds the pool (connections open lazily, up to `target.pool_size`). Must be called on the
    /// runtime that will drive the connections.
    pub fn new(target: &PostgresTarget) -> Result<Self, StoreError> {
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                // A connection the server closed (restart, idle kill) reports itself closed.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(target.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(target.connect_timeout))
            .create_timeout(Some(target.connect_timeout))
            .recycle_timeout(Some(target.connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the PostgreSQL pool: {e}")))?;
        Ok(Self {
            pool,
            handle: Handle::current(),
            statement_bound: target.statement_timeout + STATEMENT_MARGIN,
        })
    }

    /// A pooled connection, awaited on the runtime (so waiting for one holds no blocking
    /// thread), for use on a blocking thread.
    pub async fn checkout(&self) -> Result<PostgresSql, StoreError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        Ok(self.wrap(Client::Pooled(client)))
    }

    /// A connection of its own, outside the pool (the writer's, and the migrator's), from a
    /// blocking thread. Dropping it closes it, so an unknown transaction state never reaches
    /// a reader.
    pub fn dedicated(&self) -> Result<PostgresSql, StoreError> {
        let client = self.handle.block_on(self.pool.get()).map_err(pool_error)?;
        Ok(self.wrap(Client::Dedicated(Object::take(client))))
    }

    fn wrap(&self, client: Client) -> PostgresSql {
        PostgresSql {
            client: Some(client),
            handle: self.handle.clone(),
            bound: Some(self.statement_bound),
            broken: false,
        }
    }

    /// The pool's connections now: open (in use or idle), idle, its bound, and callers waiting.
    pub fn pool_stats(&self) -> PoolStats {
        let status = self.pool.status();
        PoolStats {
            max: status.max_size,
            open: status.size,
            idle: status.available,
            waiting: status.waiting,
        }
    }

    /// Closes the pool: connections are dropped as they come back.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// A connection pool's use (see [`PostgresConnector::pool_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub max: usize,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// Added to the server's statement timeout for the client's own bound: the server cancels first
/// and says why; the client's bound is for when the server cannot answer at all.
const STATEMENT_MARGIN: Duration = Duration::from_secs(5);

/// For a session that must outlive idle periods (the leader's lock, the change listener): turns
/// off a server-wide `idle_session_timeout`, which would end it (and with it the lock, or the
/// notifications) while it waits. PostgreSQL before 14 has no such setting: nothing to turn off.
pub const NO_IDLE_SESSION_TIMEOUT: &str = "DO $$ BEGIN PERFORM set_config('idle_session_timeout', '0', false); \
     EXCEPTION WHEN undefined_object THEN NULL; END $$";

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => store_error(&e),
        other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
    }
}

enum Client {
    /// Returns to the pool when dropped (unless it broke).
    Pooled(Object),
    Dedicated(ClientWrapper),
}

/// One connection.
pub struct PostgresSql {
    /// `None` only while being dropped.
    client: Option<Client>,
    handle: Handle,
    /// `None`: statements may take as long as they take (migrations wait for the lock).
    bound: Option<Duration>,
    /// A statement outlived the client-side bound: the connection's state is unknown.
    broken: bool,
}

impl PostgresSql {
    fn client(&self) -> &ClientWrapper {
        match &self.client {
            Some(Client::Pooled(object)) => object,
            Some(Client::Dedicated(client)) => client,
            None => unreachable!("the client is taken only on drop"),
        }
    }

    fn is_usable(&self) -> bool {
        !self.broken && !self.client().is_closed()
    }

    /// Lifts the client-side bound (the server's `statement_timeout` still applies unless the
    /// caller changes it).
    pub fn unbounded(mut self) -> Self {
        self.bound = None;
        self
    }

    /// The result of a statement [`drive`]n to its end; a connection that overran the
    /// client-side bound is marked broken and never reused.
    fn settle<T>(
        &mut self,
        outcome: Option<Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        match outcome {
            Some(result) => result.map_err(|e| store_error(&e)),
            None => {
                self.broken = true;
                Err(StoreError::Unavailable(
                    "PostgreSQL did not answer within the statement bound".into(),
                ))
            }
        }
    }
}

/// Runs `work` on the runtime behind `handle` (from a blocking thread), within `bound`;
/// `None` if the bound passed first.
fn drive<T>(
    handle: &Handle,
    bound: Option<Duration>,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Option<Result<T, tokio_postgres::Error>> {
    handle.block_on(async move {
        match bound {
            Some(bound) => tokio::time::timeout(bound, work).await.ok(),
            None => Some(work.await),
        }
    })
}

impl Drop for PostgresSql {
    fn drop(&mut self) {
        // A broken pooled connection leaves the pool (and closes) instead of going back to it.
        if self.broken
            && let Some(Client::Pooled(object)) = self.client.take()
        {
            drop(Object::take(object));
        }
    }
}

impl Sql for PostgresSql {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let sql = numbered_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        let client = self.client();
        let outcome = drive(&self.handle, self.bound, async {
            let statement = client.prepare_cached(&sql).await?;
            client.execute(&statement, &params).await
        });
        self.settle(outcome)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        let sql = numbered_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        let client = self.client();
        let outcome = drive(&self.handle, self.bound, async {
            let statement = client.prepare_cached(&sql).await?;
            client.query(&statement, &params).await
        });
        let rows = self.settle(outcome)?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        row.try_get::<_, Value>(i)
                            .map_err(|e| StoreError::Internal(format!("column {i}: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let client = self.client();
        let outcome = drive(&self.handle, self.bound, client.batch_execute(sql));
        self.settle(outcome)
    }
}

/// The writer thread's connection, outside the pool: taken again when the one it had closed or
/// a group failed on it (the server restarted, the network dropped it, the state is unknown),
/// so writes resume by themselves.
pub struct PostgresWriteConnection {
    connector: PostgresConnector,
    current: Option<PostgresSql>,
}

impl PostgresWriteConnection {
    pub fn new(connector: PostgresConnector) -> Self {
        Self {
            connector,
            current: None,
        }
    }
}

impl crate::store::writer::WriteConnection for PostgresWriteConnection {
    fn connection(&mut self) -> Result<&mut dyn Sql, StoreError> {
        if !self.current.as_ref().is_some_and(PostgresSql::is_usable) {
            self.current = None;
            self.current = Some(self.connector.dedicated()?);
        }
        match self.current.as_mut() {
            Some(sql) => Ok(sql),
            None => Err(StoreError::Internal("no writer connection".into())),
        }
    }

    fn after_failure(&mut self) {
        // The transaction may still be open or aborted; a new connection starts clean.
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        assert_eq!(
            numbered_placeholders("SELECT a FROM t WHERE b = ?1 AND c IN (?2, ?10)"),
            "SELECT a FROM t WHERE b = $1 AND c IN ($2, $10)"
        );
        assert_eq!(numbered_placeholders("x ? y"), "x ? y");
    }
}
