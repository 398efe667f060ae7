//! The PostgreSQL half of the bench: a fresh database per broker start (`byok_bench_<uuid>`,
//! created from the base URL of `--database-url` / `BYOK_BENCH_DATABASE_URL`, dropped WITH (FORCE)
//! once the broker has stopped), so every run starts from an empty schema the broker migrates.

use tokio_postgres::NoTls;

/// One bench database on the server the base URL names.
pub struct Database {
    base_url: String,
    name: String,
    /// The base URL with this database in it: what the broker gets as `BYOK_BROKER_DATABASE_URL`.
    pub url: String,
}

impl Database {
    pub async fn create(base_url: &str) -> Self {
        let name = format!("byok_bench_{}", uuid::Uuid::new_v4().simple());
        let client = connect(base_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Self {
            url: with_database(base_url, &name),
            base_url: base_url.to_owned(),
            name,
        }
    }
}

impl Drop for Database {
    /// Drops the database, ending any connection still open to it. Blocking, on a thread and
    /// runtime of its own, so that it also runs while a failed run unwinds.
    fn drop(&mut self) {
        let (base_url, name) = (self.base_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the bench database");
            runtime.block_on(async {
                connect(&base_url)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("bench: could not drop database {}", self.name);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    // The error names what failed (refused, authentication, ...), never the URL's password.
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at the bench's --database-url: {e}"));
    tokio::spawn(connection);
    client
}

/// `url` with its database (the path) replaced by `name`; query parameters are kept, except a
/// `dbname` one, which would override the path.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("dbname="))
        .collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out
}

/// `url` without its password, for printing.
pub fn redacted(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, _)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            let host_part = &rest[user_info.len()..];
            format!("{}{user}:***{host_part}", &url[..authority_start])
        }
        _ => url.to_owned(),
    }
}
