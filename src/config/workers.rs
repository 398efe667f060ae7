//! Settings of the background workers (the key-state watcher, rewrap jobs, the coherence worker): plain values the
//! workers take, loaded and validated by `config`.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct WatcherConfig {
    pub interval: Duration,
    /// Most DescribeKey calls in flight at once.
    pub concurrency: usize,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            concurrency: 16,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RewrapConfig {
    /// KMS calls per second one job may make (0 = unpaced), so live traffic keeps its quota.
    pub kms_calls_per_second: u32,
    /// Objects rewrapped at once.
    pub concurrency: usize,
    /// Objects per checkpoint.
    pub batch_size: usize,
}

impl Default for RewrapConfig {
    fn default() -> Self {
        Self {
            kms_calls_per_second: 100,
            concurrency: 8,
            batch_size: 200,
        }
    }
}

/// The coherence worker (several brokers on one PostgreSQL database; see `services::coherence`).
#[derive(Debug, Clone, Copy)]
pub struct CoherenceConfig {
    /// How often the stored revisions are compared with what this process loaded: the bound on
    /// seeing another broker's revocation when its notification is lost (listener down).
    pub check_interval: Duration,
}

impl Default for CoherenceConfig {
    /// 500 ms: with the time a refresh takes, a revocation whose notification was lost still
    /// reaches every broker within the 1 s the notification path promises. The check reads two
    /// one-row tables on a pooled connection: about 2 cheap queries a second per broker.
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(500),
        }
    }
}
