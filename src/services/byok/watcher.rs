//! The key-state watcher: polls `DescribeKey` for every tenant CMK of every binding not disabled
//! by an admin, on a jittered interval with bounded concurrency. A revoked-class answer (disabled,
//! pending deletion, access denied, not found, role not assumable) or a key that is no longer
//! enabled marks the CMK unavailable at once; an enabled key restores it. Transient failures change
//! nothing. Each pass also checks the platform KEKs that could serve from a DEK cache
//! (`platform_kek_watch`). The published bound: from `DisableKey` to refusal, at most one interval
//! plus one check, for tenant CMKs and platform KEKs alike.
//!
//! With several instances on one database only the leader polls KMS (so DescribeKey calls per key
//! per interval stay 1 however many run); it writes what it finds to the store, and the others
//! read the stored state each interval. Leadership is the store's ([`crate::store::Leadership`]),
//! confirmed at every pass: a leader that loses it stops polling, and the next instance to try
//! (each tries every interval) takes over, so a dead leader is replaced within one interval plus
//! the time the database takes to notice it gone.
//!
//! A leader that holds the lock but cannot reach KMS (its network path or credentials broke, not
//! the database's) would keep every other instance from polling: after [`STEP_DOWN_AFTER`]
//! passes in which no key got an answer from KMS, it gives leadership up and sits one pass out,
//! so an instance that can reach KMS takes over. Its tenant CMK verdicts are safe: a restoring
//! one is written only if the key's state has not changed since the check read it
//! (`Store::record_kek_check`), so a deposed leader's late "available" never undoes a revocation.
//! (Platform KEK verdicts are not fenced: a late "usable" lasts until the new leader's next pass.)

use std::collections::HashSet;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Byok;
pub use crate::config::workers::WatcherConfig;
use crate::keyring::bindings::{BindingSet, kek_ref};
use crate::kms::KmsErrorClass;
use crate::kms::budget::background;
use crate::store::{Attempt, Contender, Leadership};

/// The name the instances contend for.
const LEADERSHIP: &str = "key-state-watcher";

/// Consecutive leader passes without a single answer from KMS after which the leader steps down.
const STEP_DOWN_AFTER: u32 = 2;

/// How many keys a pass checked, and how many of those KMS answered (a verdict either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassTally {
    pub checked: usize,
    pub answered: usize,
}

impl PassTally {
    /// Keys to check, and not one answered: KMS is out of this instance's reach.
    fn unanswered(self) -> bool {
        self.checked > 0 && self.answered == 0
    }
}

impl std::ops::Add for PassTally {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            checked: self.checked + other.checked,
            answered: self.answered + other.answered,
        }
    }
}

/// How long a platform KEK an instance reported cached stays watched without a new report: three
/// intervals, so one late report never drops it.
const REPORT_INTERVALS: u32 = 3;

/// Runs until `stop` is cancelled or the BYOK service is dropped. A pass cut short by `stop` is
/// safe: each key's check is independent and the next start checks every key again.
pub async fn run(byok: Weak<Byok>, config: WatcherConfig, stop: CancellationToken) {
    let mut last_pass = Duration::ZERO;
    let mut leadership: Option<Leadership> = None;
    let mut contender: Option<Contender> = None;
    let mut unanswered_passes = 0;
    let mut sit_out = false;
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
        if !std::mem::take(&mut sit_out) {
            leadership = byok
                .keep_or_take_lead(leadership.take(), &mut contender)
                .await;
        }
        let leading = leadership.is_some();
        let pass = async {
            if leading {
                // Its KMS calls wait behind live traffic's (the KMS budget).
                background(byok.lead_pass(config.concurrency)).await
            } else {
                byok.follow_pass().await;
                PassTally::default()
            }
        };
        let Some(tally) = stop.run_until_cancelled(pass).await else {
            return;
        };
        unanswered_passes = if tally.unanswered() {
            unanswered_passes + 1
        } else {
            0
        };
        if leading && unanswered_passes >= STEP_DOWN_AFTER {
            tracing::warn!(
                passes = unanswered_passes,
                keys = tally.checked,
                "KMS answered none of the key-state watcher's checks; giving its leadership up so an instance that reaches KMS polls instead"
            );
            leadership = None;
            byok.metrics.set_watcher_leader(false);
            unanswered_passes = 0;
            sit_out = true;
        }
        // The leader checks its own cache directly; only followers report theirs (on SQLite the
        // one process leads, so it never writes a report).
        if !leading {
            byok.report_cached_platform_keks(config.interval * REPORT_INTERVALS)
                .await;
        }
        last_pass = started.elapsed();
        tracing::debug!(
            leading,
            checked = tally.checked,
            answered = tally.answered,
            elapsed_ms = last_pass.as_millis() as u64,
            "key-state watcher pass"
        );
    }
}

/// The tenant CMKs requests may use in `bindings`: of bindings not disabled, those available.
fn usable_keks(bindings: &BindingSet) -> HashSet<String> {
    bindings
        .all()
        .iter()
        .filter(|b| !b.record.admin_disabled)
        .flat_map(|b| b.record.keks.iter())
        .filter(|k| k.available)
        .map(|k| k.key_arn.clone())
        .collect()
}

impl Byok {
    /// Confirms the leadership held (if any), else tries to take it (on the connection a lost
    /// attempt kept in `contender`, if any); the leadership held after.
    async fn keep_or_take_lead(
        &self,
        held: Option<Leadership>,
        contender: &mut Option<Contender>,
    ) -> Option<Leadership> {
        if let Some(mut leadership) = held {
            if leadership.confirm().await {
                return Some(leadership);
            }
            tracing::warn!(
                "lost the key-state watcher's leadership (its database connection failed); not polling KMS until it is won again"
            );
            self.metrics.set_watcher_leader(false);
        }
        match self.store.try_lead(LEADERSHIP, contender.take()).await {
            Ok(Attempt::Leads(leadership)) => {
                tracing::info!("leading the key-state watcher: this instance polls KMS");
                self.metrics.set_watcher_leader(true);
                Some(leadership)
            }
            Ok(Attempt::Follows(kept)) => {
                *contender = Some(kept);
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not contend for the key-state watcher's leadership");
                None
            }
        }
    }

    /// The leader's pass: the bindings as stored (another instance may have changed them), then
    /// KMS for every tenant CMK and the platform KEKs.
    async fn lead_pass(&self, concurrency: usize) -> PassTally {
        if let Err(e) = self.reload_bindings().await {
            tracing::warn!(error = %e, "could not reload BYOK bindings; checking the current view");
        }
        let (tenant_keks, platform_keks) = tokio::join!(
            self.check_all(concurrency),
            self.check_platform_keks(concurrency)
        );
        tenant_keks + platform_keks
    }

    /// A follower's pass: no KMS call; the state the leader stored. CMKs that stopped being
    /// usable lose their cached DEKs here too (the keyring already refuses them).
    async fn follow_pass(&self) {
        let before = usable_keks(&self.keyring.bindings());
        match self.reload_bindings().await {
            Ok(()) => {
                let after = usable_keks(&self.keyring.bindings());
                for key_arn in before.difference(&after) {
                    self.dek_cache.purge_kek(key_arn).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not reload BYOK bindings; view unchanged"),
        }
        self.follow_platform_keks().await;
    }

    /// One pass over every watched CMK. Tests call it directly.
    pub async fn check_all(&self, concurrency: usize) -> PassTally {
        let byok = self;
        let bindings = byok.keyring.bindings();
        let keks: Vec<_> = bindings
            .all()
            .iter()
            .filter(|b| !b.record.admin_disabled)
            .flat_map(|b| b.record.keks.iter().cloned())
            .collect();
        let checked = keks.len();
        let answered = AtomicUsize::new(0);
        let answered = &answered;
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
                answered.fetch_add(1, Ordering::Relaxed);
                byok.metrics.record_key_check(&kek.key_arn, available);
                if let Err(e) = byok.record_kek_state(&kek.key_arn, available, reason, Some(kek.state_seq)).await {
                    tracing::error!(key_arn = %kek.key_arn, error = %e, "could not record key state");
                }
            }
            byok.watch_rotation(&kek).await;
        })
        .await;
        PassTally {
            checked,
            answered: answered.load(Ordering::Relaxed),
        }
    }
}

/// Jitter of up to 20 % so many brokers do not poll KMS in lockstep. Only downwards: the pause
/// never exceeds the configured interval, which is what the published bound promises.
fn jittered(interval: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    interval.mul_f64(0.8 + f64::from(byte[0]) / 255.0 * 0.2)
}
