//! How long a revocation takes to bite, as this process sees it: when a new routing view turns a
//! BYOK binding from serving (active or retired) to refusing (disabled or unavailable), the
//! moment is noted; the first request then refused because of that binding observes the time
//! since. Together with the state changes themselves (counted by old and new state), operators
//! see the bound the README publishes being kept, not only asserted by tests. Label values are
//! the four fixed state names.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::bindings::{BindingSet, BindingState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

pub struct RevocationClock {
    /// Bindings that turned refusing and have not refused a request since, by binding id.
    pending: Mutex<HashMap<String, Instant>>,
    to_first_refusal: Histogram,
    changes: Family<TransitionLabels, Counter>,
}

impl Default for RevocationClock {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            // 1 ms to about 65 s.
            to_first_refusal: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            changes: Family::default(),
        }
    }
}

fn refuses(state: &BindingState) -> bool {
    matches!(state, BindingState::Disabled | BindingState::Unavailable(_))
}

impl RevocationClock {
    /// A new view replaces `old`: counts each binding whose state changed and starts the clock
    /// for each that now refuses (a binding that serves again stops it).
    pub fn observe(&self, old: &BindingSet, new: &BindingSet) {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for binding in new.all() {
            let Some(before) = old.get(binding.id()) else {
                continue;
            };
            let (from, to) = (before.state(), binding.state());
            if from.as_str() == to.as_str() {
                continue;
            }
            self.changes
                .get_or_create(&TransitionLabels {
                    from: from.as_str(),
                    to: to.as_str(),
                })
                .inc();
            if refuses(&to) && !refuses(&from) {
                pending.insert(binding.id().to_owned(), now);
            } else if !refuses(&to) {
                pending.remove(binding.id());
            }
        }
    }

    /// A request was refused because of binding `id`: the first since it turned refusing is timed.
    pub fn refused(&self, id: &str) {
        let started = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(started) = started {
            self.to_first_refusal
                .observe(started.elapsed().as_secs_f64());
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "byok_broker_key_state_changes",
            "BYOK key state changes this instance observed, by old and new state",
            self.changes.clone(),
        );
        registry.register(
            "byok_broker_revocation_to_refusal_seconds",
            "Time from this instance observing a BYOK key turn disabled or unavailable to its first request refused for it",
            self.to_first_refusal.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ByokKeyRecord, ByokSnapshot, TenantKekRecord};

    const ARN: &str = "arn:aws:kms:us-east-1:111111111111:key/k";

    fn set(disabled: bool) -> BindingSet {
        let record = ByokKeyRecord {
            id: "byok_1".into(),
            match_context_json: r#"{"organization_id":"org_a"}"#.into(),
            match_context_hash: String::new(),
            provider: "aws_kms".into(),
            current_kek: ARN.into(),
            admin_disabled: disabled,
            retired: false,
            created_at: String::new(),
            updated_at: String::new(),
            keks: vec![TenantKekRecord {
                key_arn: ARN.into(),
                byok_key_id: "byok_1".into(),
                region: None,
                role_arn: None,
                external_id: None,
                available: true,
                reason: None,
                last_checked_at: None,
                state_seq: 0,
            }],
        };
        BindingSet::from_snapshot(ByokSnapshot {
            records: vec![record],
            revision: 1,
        })
        .expect("a binding set")
    }

    fn render(clock: &RevocationClock) -> String {
        let mut registry = Registry::default();
        clock.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn a_disable_is_counted_and_only_its_first_refusal_is_timed() {
        let clock = RevocationClock::default();
        clock.refused("byok_1");
        assert!(render(&clock).contains("byok_broker_revocation_to_refusal_seconds_count 0"));
        clock.observe(&set(false), &set(true));
        clock.refused("byok_1");
        clock.refused("byok_1");
        let text = render(&clock);
        assert!(
            text.contains("byok_broker_revocation_to_refusal_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"byok_broker_key_state_changes_total{from="active",to="disabled"} 1"#),
            "{text}"
        );
        // Enabled again, then disabled: timed again.
        clock.observe(&set(true), &set(false));
        clock.observe(&set(false), &set(true));
        clock.refused("byok_1");
        assert!(render(&clock).contains("byok_broker_revocation_to_refusal_seconds_count 2"));
    }
}
