//! The key-state watcher: polls `DescribeKey` for every tenant CMK of every binding not disabled
//! by an admin, on a jittered interval with bounded concurrency. A revoked-class answer (disabled,
//! pending deletion, access denied, not found, role not assumable) or a key that is no longer
//! enabled marks the CMK unavailable at once; an enabled key restores it. Transient failures change
//! nothing. Each pass also checks the platform KEKs that could serve from the DEK cache
//! (`platform_kek_watch`). The published bound: from `DisableKey` to refusal, at most one interval
//! plus one check, for tenant CMKs and platform KEKs alike.

use std::sync::Weak;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Byok;
pub use crate::config::workers::WatcherConfig;
use crate::keyring::bindings::kek_ref;
use crate::kms::KmsErrorClass;

/// Runs until `stop` is cancelled or the BYOK service is dropped. A pass cut short by `stop` is
/// safe: each key's check is independent and the next start checks every key again.
pub async fn run(byok: Weak<Byok>, config: WatcherConfig, stop: CancellationToken) {
    let mut last_pass = Duration::ZERO;
    loop {
        // Passes *start* at most one interval apart, however long a pass over many keys takes.
        let pause = jittered(config.interval).saturating_sub(last_pass);
        if stop
            .run_until_cancelled(tokio::time::sleep(pause))
            .await
            .is_none()
        {
            return;
        }
        let Some(byok) = byok.upgrade() else {
            return;
        };
        let started = Instant::now();
        let pass = async {
            tokio::join!(
                byok.check_all(config.concurrency),
                byok.check_platform_keks(config.concurrency)
            )
        };
        let Some((tenant_keks, platform_keks)) = stop.run_until_cancelled(pass).await else {
            return;
        };
        let checked = tenant_keks + platform_keks;
        last_pass = started.elapsed();
        tracing::debug!(
            checked,
            elapsed_ms = last_pass.as_millis() as u64,
            "key-state watcher pass"
        );
    }
}

impl Byok {
    /// One pass over every watched CMK; returns how many were checked. Tests call it directly.
    pub async fn check_all(&self, concurrency: usize) -> usize {
        let byok = self;
        let bindings = byok.keyring.bindings();
        let keks: Vec<_> = bindings
            .all()
            .iter()
            .filter(|b| !b.record.admin_disabled)
            .flat_map(|b| b.record.keks.iter().cloned())
            .collect();
        let count = keks.len();
        futures_util::stream::iter(keks)
        .for_each_concurrent(concurrency.max(1), |kek| async move {
            let verdict = match byok.provider().describe(&kek_ref(&kek)).await {
                Ok(d) if d.enabled => Some((true, None)),
                Ok(d) => Some((false, Some(format!("key_{}", d.state.to_ascii_lowercase())))),
                Err(e) if e.class() == KmsErrorClass::Revoked => Some((false, Some(e.failure.as_str().to_owned()))),
                Err(e) => {
                    tracing::warn!(key_arn = %kek.key_arn, error = %e, "key-state check failed transiently; state unchanged");
                    None
                }
            };
            if let Some((available, reason)) = verdict {
                byok.metrics.record_key_check(&kek.key_arn, available);
                if let Err(e) = byok.record_kek_state(&kek.key_arn, available, reason).await {
                    tracing::error!(key_arn = %kek.key_arn, error = %e, "could not record key state");
                }
            }
        })
        .await;
        count
    }
}

/// Jitter of up to 20 % so many brokers do not poll KMS in lockstep. Only downwards: the pause
/// never exceeds the configured interval, which is what the published bound promises.
fn jittered(interval: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    interval.mul_f64(0.8 + f64::from(byte[0]) / 255.0 * 0.2)
}
