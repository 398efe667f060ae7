//! Bounds on resources the broker spends: request and value sizes, the per-key request rate, the
//! plaintext DEKs held in memory and the database size. Plain values the components take; loaded
//! and validated by `config`.

use std::time::Duration;

/// Request limits for the data plane.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest object value accepted, in bytes (UTF-8).
    pub max_value_bytes: usize,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    /// Whether `encrypted_keys` blobs in the untagged format 1 (issued before format 2) still
    /// open. Their DEK id is unauthenticated, and a format 2 blob can be rewritten as format 1;
    /// turn this off once the blobs clients hold are format 2.
    pub accept_legacy_data_key_blobs: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_request_bytes: 2 * 1024 * 1024,
            // Format 1 blobs were issued by releases before format 2 existed: keep them working.
            accept_legacy_data_key_blobs: true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct DekCacheConfig {
    /// How long a plaintext DEK may stay in memory after it was loaded. Zero disables caching.
    pub ttl: Duration,
    /// The most DEKs held at once; the least valuable are evicted first.
    pub capacity: u64,
}

impl Default for DekCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RateLimitConfig {
    /// Sustained requests per second per API key; 0 disables the limit.
    pub per_second: u32,
    /// Requests a key may send at once before the sustained rate applies.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 0,
            burst: 100,
        }
    }
}
