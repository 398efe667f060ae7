//! Platform KEKs the key-state watcher found unusable in KMS (disabled, pending deletion, gone):
//! the keyring refuses them for reads and writes, whoever asks (requests, rewrap jobs), until the
//! watcher sees them enabled again.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::kms::KmsFailure;

/// Platform KEKs KMS reported unusable, with the failure a request meeting them reports.
#[derive(Default)]
pub struct PlatformKekStates {
    unavailable: RwLock<HashMap<String, KmsFailure>>,
}

impl PlatformKekStates {
    /// The failure to report for `kek_id`, when it is marked unavailable.
    pub fn unavailable(&self, kek_id: &str) -> Option<KmsFailure> {
        let map = self
            .unavailable
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(kek_id).copied()
    }

    pub(crate) fn marked(&self) -> Vec<String> {
        let map = self
            .unavailable
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.keys().cloned().collect()
    }

    /// Records a verdict; true when it changed the state.
    pub(crate) fn set(&self, kek_id: &str, failure: Option<KmsFailure>) -> bool {
        let mut map = self
            .unavailable
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(failure) => map.insert(kek_id.to_owned(), failure) != Some(failure),
            None => map.remove(kek_id).is_some(),
        }
    }
}
