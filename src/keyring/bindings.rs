//! The in-memory view of BYOK bindings that every request consults: which binding covers a
//! context (the most specific `match_context` that is a subset wins), which binding owns a stored
//! KEK, and each binding's state. Built from a store snapshot and replaced whole on every change;
//! it carries the snapshot's revision so an older view never replaces a newer one.

use std::collections::HashMap;

use crate::context::KeyContext;
use crate::kms::{KekRef, TenantAccess};
use crate::store::ByokSnapshot;
/// A binding's stored record and its CMKs, as `Binding::record` holds them.
pub use crate::store::{ByokKeyRecord, TenantKekRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingState {
    Active,
    /// Disabled by an admin in the broker.
    Disabled,
    /// BYOK turned off by an admin: covers nothing; its CMKs still open the objects under them.
    Retired,
    /// The current CMK answered with a revoked-class error (disabled, pending deletion, access
    /// removed, gone); the reason is the failure's stable name.
    Unavailable(String),
}

impl BindingState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BindingState::Active => "active",
            BindingState::Disabled => "disabled",
            BindingState::Retired => "retired",
            BindingState::Unavailable(_) => "unavailable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub record: ByokKeyRecord,
    pub match_context: KeyContext,
}

impl Binding {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn kek(&self, key_arn: &str) -> Option<&TenantKekRecord> {
        self.record.keks.iter().find(|k| k.key_arn == key_arn)
    }

    /// True when `context` contains this binding's selector: the contexts it covers or (retired,
    /// or outranked by a more specific binding) covered, whose objects its CMKs may still hold.
    pub fn selects(&self, context: &KeyContext) -> bool {
        context.contains(&self.match_context)
    }

    pub fn current_kek(&self) -> Option<&TenantKekRecord> {
        self.kek(&self.record.current_kek)
    }

    pub fn state(&self) -> BindingState {
        if self.record.admin_disabled {
            return BindingState::Disabled;
        }
        if self.record.retired {
            return BindingState::Retired;
        }
        match self.current_kek() {
            Some(kek) if kek.available => BindingState::Active,
            Some(kek) => BindingState::Unavailable(
                kek.reason
                    .clone()
                    .unwrap_or_else(|| "key_unavailable".into()),
            ),
            None => BindingState::Unavailable("current_key_missing".into()),
        }
    }
}

/// How the broker reaches a recorded tenant CMK.
pub fn kek_ref(kek: &TenantKekRecord) -> KekRef {
    KekRef {
        key_id: kek.key_arn.clone(),
        region: kek.region.clone(),
        access: kek.role_arn.as_ref().map(|role_arn| TenantAccess {
            role_arn: role_arn.clone(),
            external_id: kek.external_id.clone(),
        }),
    }
}

#[derive(Debug, Default)]
pub struct BindingSet {
    /// The store revision this view was read at (0: built without the store).
    revision: u64,
    bindings: Vec<Binding>,
    owner_by_kek: HashMap<String, usize>,
}

impl BindingSet {
    /// Builds the set from stored records. A record whose context no longer parses is an error:
    /// silently skipping it would route that tenant's data to a platform KEK (fail open).
    pub fn from_records(records: Vec<ByokKeyRecord>) -> Result<Self, String> {
        let mut set = BindingSet::default();
        for record in records {
            let match_context: KeyContext = serde_json::from_str(&record.match_context_json)
                .map_err(|e| format!("BYOK key {}: stored match_context: {e}", record.id))?;
            for kek in &record.keks {
                set.owner_by_kek
                    .insert(kek.key_arn.clone(), set.bindings.len());
            }
            set.bindings.push(Binding {
                record,
                match_context,
            });
        }
        Ok(set)
    }

    /// Builds the set from a store snapshot, keeping its revision.
    pub fn from_snapshot(snapshot: ByokSnapshot) -> Result<Self, String> {
        let mut set = Self::from_records(snapshot.records)?;
        set.revision = snapshot.revision;
        Ok(set)
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn all(&self) -> &[Binding] {
        &self.bindings
    }

    pub fn get(&self, id: &str) -> Option<&Binding> {
        self.bindings.iter().find(|b| b.id() == id)
    }

    /// The binding covering `context`: the most specific `match_context` contained in it.
    /// Registration refuses equally specific overlapping bindings, so the winner is unique.
    pub fn covering(&self, context: &KeyContext) -> Option<&Binding> {
        self.bindings
            .iter()
            .filter(|b| !b.record.retired && b.selects(context))
            .max_by_key(|b| b.match_context.pairs().len())
    }

    /// The binding that owns a stored KEK id, if it is a tenant CMK.
    pub fn owner_of(&self, kek_id: &str) -> Option<&Binding> {
        self.owner_by_kek.get(kek_id).map(|&i| &self.bindings[i])
    }

    /// An existing binding that a new `match_context` would collide with: the same selector, or
    /// one equally specific that some context could match together with it (ambiguous routing).
    pub fn conflict_for(
        &self,
        candidate: &KeyContext,
        except_id: Option<&str>,
    ) -> Option<(&Binding, bool)> {
        self.bindings
            .iter()
            .filter(|b| Some(b.id()) != except_id)
            .find_map(|b| {
                if b.match_context == *candidate {
                    return Some((b, true));
                }
                let same_size = b.match_context.pairs().len() == candidate.pairs().len();
                let compatible = b
                    .match_context
                    .pairs()
                    .iter()
                    .all(|(k, v)| candidate.get(k).is_none_or(|cv| cv == v));
                (same_size && compatible).then_some((b, false))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, selector: &[(&str, &str)], kek: &str) -> ByokKeyRecord {
        let context = KeyContext::new(selector.iter().copied()).unwrap();
        ByokKeyRecord {
            id: id.into(),
            match_context_json: serde_json::to_string(&context).unwrap(),
            match_context_hash: context.hash().to_hex(),
            provider: "aws_kms".into(),
            current_kek: kek.into(),
            admin_disabled: false,
            retired: false,
            created_at: String::new(),
            updated_at: String::new(),
            keks: vec![TenantKekRecord {
                key_arn: kek.into(),
                byok_key_id: id.into(),
                region: None,
                role_arn: None,
                external_id: None,
                available: true,
                reason: None,
                last_checked_at: None,
                state_seq: 0,
            }],
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> KeyContext {
        KeyContext::new(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn most_specific_subset_wins() {
        let set = BindingSet::from_records(vec![
            record("org", &[("org", "acme")], "k1"),
            record("pii", &[("org", "acme"), ("type", "pii")], "k2"),
        ])
        .unwrap();
        assert_eq!(
            set.covering(&ctx(&[("org", "acme"), ("type", "pii")]))
                .unwrap()
                .id(),
            "pii"
        );
        assert_eq!(
            set.covering(&ctx(&[("org", "acme"), ("type", "logs")]))
                .unwrap()
                .id(),
            "org"
        );
        assert!(set.covering(&ctx(&[("org", "globex")])).is_none());
        assert_eq!(set.owner_of("k2").unwrap().id(), "pii");
        assert!(set.owner_of("platform-kek").is_none());
    }

    #[test]
    fn equally_specific_overlaps_are_conflicts() {
        let set = BindingSet::from_records(vec![record("org", &[("org", "acme")], "k1")]).unwrap();
        assert!(
            set.conflict_for(&ctx(&[("org", "acme")]), None).unwrap().1,
            "identical"
        );
        assert!(
            !set.conflict_for(&ctx(&[("type", "pii")]), None).unwrap().1,
            "ambiguous for {{org: acme, type: pii}}"
        );
        assert!(
            set.conflict_for(&ctx(&[("org", "globex")]), None).is_none(),
            "disjoint"
        );
        assert!(
            set.conflict_for(&ctx(&[("org", "acme"), ("type", "pii")]), None)
                .is_none(),
            "more specific"
        );
    }

    #[test]
    fn state_follows_admin_flag_and_current_kek() {
        let mut r = record("b", &[("org", "acme")], "k1");
        let binding =
            |r: &ByokKeyRecord| BindingSet::from_records(vec![r.clone()]).unwrap().all()[0].state();
        assert_eq!(binding(&r), BindingState::Active);
        r.keks[0].available = false;
        r.keks[0].reason = Some("key_disabled".into());
        assert_eq!(
            binding(&r),
            BindingState::Unavailable("key_disabled".into())
        );
        r.admin_disabled = true;
        assert_eq!(binding(&r), BindingState::Disabled);
    }
}
