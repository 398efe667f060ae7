//! [`Sql`] on PostgreSQL through tokio-postgres and a deadpool pool. Store operations are
//! synchronous closures running on blocking threads (the writer thread, or the blocking pool for
//! reads), as on SQLite; each statement here is driven to completion on the runtime the pool
//! belongs to (`Handle::block_on` is allowed on those threads), so one query text serves both
//! backends. Statements are prepared once per connection (the pool's statement cache).

use std::error::Error as StdError;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
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
        // No server answer: the connection is closed, refused, timed out or broken.
        return StoreError::Unavailable(format!("PostgreSQL connection failed: {e}"));
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

/// The pool of one store: its connections, and the runtime that drives them.
#[derive(Clone)]
pub struct PostgresConnector {
    pool: Pool,
    handle: Handle,
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
        })
    }

    /// A connection from the pool, for a blocking thread (not a runtime worker).
    pub fn checkout(&self) -> Result<PostgresSql, StoreError> {
        let client = self.handle.block_on(self.pool.get()).map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => store_error(&e),
            other => StoreError::Unavailable(format!("no PostgreSQL connection: {other}")),
        })?;
        Ok(PostgresSql {
            client,
            handle: self.handle.clone(),
        })
    }

    /// Closes the pool: connections are dropped as they come back.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// One pooled connection; returns to the pool when dropped.
pub struct PostgresSql {
    client: Object,
    handle: Handle,
}

impl PostgresSql {
    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Sql for PostgresSql {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let sql = numbered_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        self.handle
            .block_on(async {
                let statement = self.client.prepare_cached(&sql).await?;
                self.client.execute(&statement, &params).await
            })
            .map_err(|e| store_error(&e))
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        let sql = numbered_placeholders(sql);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as _).collect();
        let rows = self
            .handle
            .block_on(async {
                let statement = self.client.prepare_cached(&sql).await?;
                self.client.query(&statement, &params).await
            })
            .map_err(|e| store_error(&e))?;
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
        self.handle
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| store_error(&e))
    }
}

/// The writer thread's connection: taken from the pool, and taken again when the one it had
/// closed (the server restarted, the network dropped it), so writes resume by themselves.
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
        if self.current.as_ref().is_none_or(PostgresSql::is_closed) {
            self.current = None;
            self.current = Some(self.connector.checkout()?);
        }
        match self.current.as_mut() {
            Some(sql) => Ok(sql),
            None => Err(StoreError::Internal("no writer connection".into())),
        }
    }

    fn after_failure(&mut self) {
        if self.current.as_ref().is_some_and(PostgresSql::is_closed) {
            self.current = None;
        }
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
