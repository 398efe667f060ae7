//! Settings of the background workers (the key-state watcher, rewrap jobs): plain values the
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
