//! The one SQL interface every store operation is written against, so each query exists once and
//! means the same on both backends. Statements use SQLite's numbered placeholders (`?1`, `?2`);
//! the PostgreSQL side rewrites them to `$1`. Values are the four storage classes both databases
//! share (integers are 64-bit: PostgreSQL columns are `BIGINT`). The few constructs the dialects
//! spell differently ask [`Dialect`].

mod postgres;
mod sqlite;

pub use postgres::PoolStats;
pub(super) use postgres::{
    NO_IDLE_SESSION_TIMEOUT, PostgresConnector, PostgresSql, PostgresWriteConnection, store_error,
};
pub(super) use sqlite::SqliteWriteConnection;

use super::StoreError;

/// Which database a connection talks to, for the few statements spelled differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The database's clock as Unix milliseconds: leases compare against it, the one clock every
    /// instance shares (theirs may drift apart).
    pub(in crate::store) fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }
}

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// A connection (or a transaction on one) that runs statements. Object safe: the writer hands
/// each write a `&mut dyn Sql`, whichever backend it is.
pub trait Sql {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; how many rows it changed.
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError>;
    /// Runs one statement; every row it returned.
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// Runs several statements without parameters (migrations, transaction control).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

impl dyn Sql + '_ {
    /// The first row, if any.
    pub fn query_opt(&mut self, sql: &str, args: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// The first row; a statement that returns none is a bug in the store, not a miss.
    pub fn query_one(&mut self, sql: &str, args: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, args)?.ok_or_else(|| {
            StoreError::Internal("a query that always returns a row returned none".into())
        })
    }
}

/// One returned row.
#[derive(Debug, Clone)]
pub struct Row(pub(super) Vec<Value>);

impl Row {
    /// Column `index` as `T`; a type that does not fit is a schema bug, reported as such.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, StoreError> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| StoreError::Internal(format!("the query returned no column {index}")))?;
        T::from_value(value)
            .ok_or_else(|| StoreError::Internal(format!("column {index} holds an unexpected type")))
    }
}

/// A Rust type a column converts into.
pub trait FromValue: Sized {
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for u64 {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).and_then(|i| u64::try_from(i).ok())
    }
}

impl FromValue for bool {
    fn from_value(value: &Value) -> Option<Self> {
        i64::from_value(value).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// A Rust value a parameter is made from (by reference: building the arguments moves nothing).
pub trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Integer(*self)
    }
}

impl ToValue for i32 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

/// Stored as a signed 64-bit integer; counts and sizes never come near the sign bit, and one that
/// did is stored saturated rather than wrapped negative.
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// The parameters of one statement: `args![a, b]` borrows each and converts it to a [`Value`].
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::store::sql::ToValue::to_value(&$arg)),*][..]
    };
}
pub(crate) use args;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_rust_types() {
        assert_eq!(Some(7i64), i64::from_value(&7i64.to_value()));
        assert_eq!(Some(true), bool::from_value(&true.to_value()));
        assert_eq!(
            Some(None::<String>),
            Option::<String>::from_value(&Value::Null)
        );
        assert_eq!(
            None,
            String::from_value(&Value::Integer(1)),
            "types never coerce"
        );
        assert_eq!(None, u64::from_value(&Value::Integer(-1)));
        assert_eq!(Value::Integer(i64::MAX), u64::MAX.to_value());
        let args = args!["a", 2i64, None::<String>, vec![1u8]];
        assert_eq!(args.len(), 4);
        assert_eq!(args[2], Value::Null);
    }
}
