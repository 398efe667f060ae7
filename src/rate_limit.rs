//! Per-API-key request rate limit: a token bucket per key (rate per second, burst). A request over
//! the limit is refused with 429 and a `Retry-After`, so the SDKs back off and retry.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use crate::config::limits::RateLimitConfig;

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: moka::sync::Cache<String, std::sync::Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Takes one token for `key`; on refusal returns how long until a token is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.config.per_second == 0 {
            return Ok(());
        }
        let burst = f64::from(self.config.burst.max(1));
        let rate = f64::from(self.config.per_second);
        let bucket = self.buckets.get_with_by_ref(key, || {
            std::sync::Arc::new(Mutex::new(Bucket {
                tokens: burst,
                refilled_at: Instant::now(),
            }))
        });
        // A poisoned bucket only means another request panicked mid-update; its numbers are still usable.
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.refilled_at).as_secs_f64() * rate)
            .min(burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(RateLimitConfig {
            per_second: 50,
            burst: 3,
        });
        assert!((0..3).all(|_| limiter.check("k").is_ok()));
        let wait = limiter.check("k").unwrap_err();
        assert!(wait <= Duration::from_millis(20), "{wait:?}");
        assert!(limiter.check("other").is_ok(), "keys have separate buckets");
        std::thread::sleep(Duration::from_millis(30));
        assert!(limiter.check("k").is_ok());
    }

    #[test]
    fn zero_rate_disables_the_limit() {
        let limiter = RateLimiter::new(RateLimitConfig {
            per_second: 0,
            burst: 1,
        });
        assert!((0..1000).all(|_| limiter.check("k").is_ok()));
    }
}
