//! What the admin API shows with a binding: the routing view, how many objects each KEK still
//! protects, and how many objects a binding covers that sit under none of its CMKs.

use std::collections::HashMap;
use std::sync::Arc;

use super::Byok;
use crate::error::Error;
use crate::keyring::bindings::{Binding, BindingSet};

impl Byok {
    /// The current routing view (every binding with its state).
    pub fn bindings(&self) -> Arc<BindingSet> {
        self.keyring.bindings()
    }

    /// Objects per KEK id, counting each object's current version only.
    pub async fn count_objects_by_kek(&self) -> Result<HashMap<String, u64>, Error> {
        Ok(self.store.count_objects_by_kek().await?)
    }

    /// Objects whose context `binding` covers but whose current version sits under another KEK
    /// (a platform KEK, before a rewrap onboards them).
    pub async fn count_objects_outside(&self, binding: &Binding) -> Result<u64, Error> {
        let (selector, kek_ids) = outside(binding);
        Ok(self.store.count_objects_outside(selector, kek_ids).await?)
    }

    /// The KEKs (platform KEKs) those objects sit under: the sources of an onboarding rewrap.
    pub async fn keks_outside(&self, binding: &Binding) -> Result<Vec<String>, Error> {
        let (selector, kek_ids) = outside(binding);
        Ok(self.store.keks_outside(selector, kek_ids).await?)
    }
}

/// The binding's match context as a selector, and its CMKs.
fn outside(binding: &Binding) -> (Vec<(String, String)>, Vec<String>) {
    let kek_ids = binding
        .record
        .keks
        .iter()
        .map(|k| k.key_arn.clone())
        .collect();
    let selector = binding
        .match_context
        .pairs()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (selector, kek_ids)
}
