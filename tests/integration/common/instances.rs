//! Several broker processes on one PostgreSQL database, as a load balancer sees them: each with
//! its own data directory and port, all sharing the database, the LocalStack account and the KEK
//! alias prefix. PostgreSQL-only: on a SQLite run there is nothing to share.

use super::TestDir;
use super::process::{BrokerProcess, spawn_broker, temp_dir};

pub struct Instances {
    /// Declared first, so dropped (killed) before the directories and the database go.
    pub brokers: Vec<BrokerProcess>,
    pub url: String,
    pub prefix: String,
    dirs: Vec<TestDir>,
    /// Owns the shared database: dropping it drops the database.
    _database: TestDir,
}

impl Instances {
    /// `count` brokers on one fresh database (against LocalStack), each started with `extra`
    /// settings; `None`, after saying why, when the suite runs on SQLite.
    pub async fn spawn(name: &str, count: usize, extra: &[(&str, &str)]) -> Option<Self> {
        let database = TestDir::new(&format!("{name}-shared"));
        let Some(url) = super::database::broker_url(&database) else {
            eprintln!(
                "not run: several instances need PostgreSQL (BYOK_TEST_DATABASE_URL is unset)"
            );
            return None;
        };
        let prefix = super::unique_prefix(name);
        let mut instances = Self {
            brokers: Vec::new(),
            url,
            prefix,
            dirs: Vec::new(),
            _database: database,
        };
        for _ in 0..count {
            instances.add(extra).await;
        }
        Some(instances)
    }

    /// Starts one more instance on the shared database; its index in `brokers`.
    pub async fn add(&mut self, extra: &[(&str, &str)]) -> usize {
        let dir = temp_dir("instance");
        let mut settings = vec![("BYOK_BROKER_DATABASE_URL", self.url.as_str())];
        settings.extend_from_slice(extra);
        let broker = spawn_broker(&dir, &self.prefix, &settings).await;
        self.dirs.push(dir);
        self.brokers.push(broker);
        self.brokers.len() - 1
    }

    pub fn port(&self, index: usize) -> u16 {
        self.brokers[index].port
    }

    /// The directory that names the shared database, for `database::query` and friends.
    pub fn database_dir(&self) -> &std::path::Path {
        &self._database
    }
}
