//! The store backend under test. With `BYOK_TEST_DATABASE_URL` unset, brokers use their embedded
//! default (SQLite, `<data_dir>/broker.db`). With it set (a `postgres://` URL whose database the
//! tests may connect to and create databases from), every data directory a broker is started on
//! gets its own fresh PostgreSQL database, created on first use and dropped with its `TestDir`: a
//! restarted broker on the same directory finds the same state, and tests never share one.
//! Also the raw SQL the few tests that inspect or tamper with the database run on either backend.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Every test database's name starts with this: `scripts/test.sh` drops leftovers by it.
const PREFIX: &str = "byok_t_";
/// PostgreSQL truncates longer identifiers.
const MAX_NAME: usize = 63;

/// The URL tests create their databases through, if PostgreSQL is the backend under test.
fn admin_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var("BYOK_TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
    })
    .as_deref()
}

pub fn is_postgres() -> bool {
    admin_url().is_some()
}

/// The databases created so far, by name: a data directory's database is created once however
/// many brokers start on it, and dropped only if it was created.
fn created() -> &'static Mutex<HashSet<String>> {
    static CREATED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CREATED.get_or_init(Mutex::default)
}

/// The database of `data_dir`, named after its last component (unique: `TestDir` ends it with a
/// UUID), lower-case, `[a-z0-9_]` only.
fn database_name(data_dir: &Path) -> String {
    let component = data_dir
        .file_name()
        .expect("a data directory has a last component")
        .to_string_lossy()
        .to_lowercase();
    let component = component.strip_prefix("byok-").unwrap_or(&component);
    let name: String = component
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    // The unique part is at the end: a name too long keeps its tail.
    format!(
        "{PREFIX}{}",
        &name[name.len().saturating_sub(MAX_NAME - PREFIX.len())..]
    )
}

/// `url` with its database (the path) replaced by `name`, query parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let authority = base
        .find("://")
        .map(|i| i + 3)
        .expect("BYOK_TEST_DATABASE_URL is a postgres:// URL");
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..path])
}

/// The `BYOK_BROKER_DATABASE_URL` for a broker on `data_dir`, creating its database on first use;
/// `None` on SQLite, where the broker keeps its database in `data_dir` itself.
pub fn broker_url(data_dir: &Path) -> Option<String> {
    let admin = admin_url()?;
    let name = database_name(data_dir);
    // Held while creating, so a second broker on the same directory waits for the database.
    let mut created = created().lock().unwrap_or_else(PoisonError::into_inner);
    if !created.contains(&name) {
        run_admin(admin, format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        created.insert(name.clone());
    }
    Some(with_database(admin, &name))
}

/// Drops `data_dir`'s database if a test created one; `TestDir`'s drop calls it. Never panics (a
/// panic in a drop during unwinding aborts the run): a failure is reported, and the leftover is
/// dropped by the next `scripts/test.sh`.
pub fn drop_database(data_dir: &Path) {
    let Some(admin) = admin_url() else { return };
    let name = database_name(data_dir);
    let mut created = created().lock().unwrap_or_else(PoisonError::into_inner);
    if !created.remove(&name) {
        return;
    }
    // FORCE: a broker of the test may still hold connections (an in-process one's pool).
    if let Err(e) = run_admin(
        admin,
        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    ) {
        eprintln!("warning: cannot drop the test database {name}: {e}");
    }
}

/// Runs one statement through the admin URL on a thread of its own with its own runtime: callers
/// are synchronous (a config builder, a `Drop`) yet often inside a test's runtime, which cannot
/// be blocked on from within.
fn run_admin(url: &str, statement: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = connect(&url).await.map_err(|e| e.to_string())?;
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the thread panicked".to_owned())?
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    // The connection does the I/O; it ends when the client is dropped.
    tokio::spawn(connection);
    Ok(client)
}

/// A column value read by [`query`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    pub fn integer(&self) -> i64 {
        match self {
            Value::Integer(value) => *value,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Value::Text(value) => value,
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub fn blob(&self) -> &[u8] {
        match self {
            Value::Blob(value) => value,
            other => panic!("expected a blob, got {other:?}"),
        }
    }
}

/// SQLite reads `$1` as a named parameter, numbered by first appearance; `?1` is positional.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        let numbered = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if numbered { '?' } else { c });
    }
    out
}

fn sqlite(data_dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data_dir.join("broker.db")).expect("open broker.db");
    // The broker may be writing at the same time.
    db.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    db
}

async fn postgres(data_dir: &Path) -> tokio_postgres::Client {
    let url = broker_url(data_dir).expect("PostgreSQL is the backend");
    connect(&url).await.expect("connect to the test database")
}

fn pg_params<'a>(params: &'a [&'a str]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Every row `sql` returns from the database of the broker on `data_dir`. Placeholders are `$1`,
/// `$2`…; parameters are text.
pub async fn query(data_dir: &Path, sql: &str, params: &[&str]) -> Vec<Vec<Value>> {
    if is_postgres() {
        use tokio_postgres::types::Type;
        let rows = postgres(data_dir)
            .await
            .query(sql, &pg_params(params))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let value = |row: &tokio_postgres::Row, i: usize| {
            let column = &row.columns()[i];
            let value = match *column.type_() {
                Type::INT8 => row.get::<_, Option<i64>>(i).map(Value::Integer),
                Type::INT4 => row
                    .get::<_, Option<i32>>(i)
                    .map(|v| Value::Integer(v.into())),
                Type::TEXT | Type::VARCHAR => row.get::<_, Option<String>>(i).map(Value::Text),
                Type::BYTEA => row.get::<_, Option<Vec<u8>>>(i).map(Value::Blob),
                ref other => panic!("column {} has type {other}", column.name()),
            };
            value.unwrap_or(Value::Null)
        };
        rows.iter()
            .map(|row| (0..row.len()).map(|i| value(row, i)).collect())
            .collect()
    } else {
        use rusqlite::types::ValueRef;
        let db = sqlite(data_dir);
        let mut statement = db
            .prepare(&sqlite_placeholders(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let columns = statement.column_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(params), |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(v) => Value::Integer(v),
                            ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into()),
                            ValueRef::Blob(v) => Value::Blob(v.to_vec()),
                            ValueRef::Real(v) => panic!("unexpected real {v}"),
                        })
                    })
                    .collect()
            })
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.map(|row| row.unwrap_or_else(|e| panic!("{sql}: {e}")))
            .collect()
    }
}

/// The integer in the one row and column `sql` returns (a `COUNT(*)`).
pub async fn query_i64(data_dir: &Path, sql: &str, params: &[&str]) -> i64 {
    let rows = query(data_dir, sql, params).await;
    assert_eq!(rows.len(), 1, "{sql}: one row");
    rows[0][0].integer()
}

/// Runs one statement; how many rows it changed.
pub async fn execute(data_dir: &Path, sql: &str, params: &[&str]) -> u64 {
    if is_postgres() {
        postgres(data_dir)
            .await
            .execute(sql, &pg_params(params))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    } else {
        let changed = sqlite(data_dir)
            .execute(
                &sqlite_placeholders(sql),
                rusqlite::params_from_iter(params),
            )
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        changed as u64
    }
}

#[test]
fn names_and_urls() {
    let dir = Path::new("/tmp/byok-http-Some.Test-0123456789abcdef0123456789abcdef");
    assert_eq!(
        database_name(dir),
        "byok_t_http_some_test_0123456789abcdef0123456789abcdef"
    );
    let long = Path::new("/tmp").join(format!("byok-{}-{}", "x".repeat(80), "f".repeat(32)));
    let name = database_name(&long);
    assert_eq!(name.len(), MAX_NAME);
    assert!(name.starts_with(PREFIX) && name.ends_with(&"f".repeat(32)));
    assert_eq!(
        with_database(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            "d"
        ),
        "postgres://postgres@127.0.0.1:5432/d?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "d"), "postgres://h/d");
    assert_eq!(
        sqlite_placeholders("a = $1 AND b = $12 AND c = '$'"),
        "a = ?1 AND b = ?12 AND c = '$'"
    );
}
