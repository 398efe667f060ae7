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
    /// How long a job stays with the instance running it without a renewal (renewed at each
    /// checkpoint and every third of it). Another instance resumes a job whose owner died within
    /// this plus one claim scan ([`RewrapConfig::claim_scan`]).
    pub lease: Duration,
}

impl RewrapConfig {
    /// How often each instance looks for jobs whose lease ran out: a fifth of the lease, so a
    /// dead owner's job resumes within 1.2 leases of its last renewal.
    pub fn claim_scan(&self) -> Duration {
        self.lease / 5
    }

    /// How often the owner renews a job's lease besides at checkpoints: a batch may outlast
    /// the lease (a slow pace, a slow KMS), and the owner must keep it meanwhile.
    pub fn renewal(&self) -> Duration {
        self.lease / 3
    }
}

impl Default for RewrapConfig {
    fn default() -> Self {
        Self {
            kms_calls_per_second: 100,
            concurrency: 8,
            batch_size: 200,
            lease: Duration::from_secs(15),
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
