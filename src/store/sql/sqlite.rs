//! [`Sql`] on an embedded SQLite connection (or a transaction or savepoint, which dereference to
//! one). Statements are prepared once per connection and kept in rusqlite's cache.

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{Dialect, Row, Sql, Value};
use crate::store::StoreError;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn value_of(value: ValueRef<'_>) -> Result<Value, StoreError> {
    Ok(match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Text(t) => Value::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| StoreError::Internal("a text column holds invalid UTF-8".into()))?,
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        // The schema has no REAL columns; a computed one would be a query bug.
        ValueRef::Real(_) => {
            return Err(StoreError::Internal(
                "a query returned a floating-point value".into(),
            ));
        }
    })
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let mut statement = self.prepare_cached(sql)?;
        Ok(statement.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.prepare_cached(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..columns)
                .map(|i| value_of(row.get_ref(i)?))
                .collect::<Result<Vec<_>, StoreError>>()?;
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.execute_batch(sql)?)
    }
}

/// The writer thread's SQLite connection. A failed group leaves it usable (SQLite reports errors
/// per statement), so there is nothing to reopen.
pub struct SqliteWriteConnection(pub Connection);

impl crate::store::writer::WriteConnection for SqliteWriteConnection {
    fn connection(&mut self) -> Result<&mut dyn Sql, StoreError> {
        Ok(&mut self.0)
    }

    fn after_failure(&mut self) {}
}
