//! The application context: built once at start from a validated [`Config`] and shared immutably
//! by every request (provider, keyring, DEK cache). Mutable state lives inside those components.

use std::sync::Arc;

use crate::cache::DekCache;
use crate::config::{Config, ProviderKind};
use crate::keyring::Keyring;
use crate::kms::aws::AwsKms;
use crate::kms::local::LocalKms;
use crate::kms::{KeyProvider, KmsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("key provider: {0}")]
    Provider(#[from] KmsError),
    #[error("{0}")]
    Keyring(#[from] crate::keyring::AliasPrefixError),
}

pub struct Broker {
    pub config: Config,
    pub keyring: Keyring,
    pub dek_cache: DekCache,
}

impl Broker {
    pub async fn start(config: Config) -> Result<Arc<Self>, StartError> {
        let provider: Arc<dyn KeyProvider> = match config.provider {
            ProviderKind::Local => {
                Arc::new(LocalKms::open(&config.data_dir.join("local-kms")).await?)
            }
            ProviderKind::Aws => Arc::new(AwsKms::connect(&config.aws).await?),
        };
        let keyring = Keyring::new(provider, &config.kek_alias_prefix)?;
        let dek_cache = DekCache::new(config.dek_cache);
        Ok(Arc::new(Self {
            config,
            keyring,
            dek_cache,
        }))
    }

    pub fn provider(&self) -> &dyn KeyProvider {
        self.keyring.provider().as_ref()
    }

    /// Readiness: the key provider answers. An alias lookup is read-only and cheap.
    pub async fn check_ready(&self) -> Result<(), KmsError> {
        self.provider()
            .find_alias(&format!(
                "alias/{}/readiness-probe",
                self.config.kek_alias_prefix
            ))
            .await
            .map(|_| ())
    }
}
