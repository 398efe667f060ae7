//! The application state: built once at start from a validated [`Config`] and shared immutably
//! by every request. It holds the services handlers call, plus what readiness, metrics, request
//! guards and the server need; mutable state lives inside those components.

use std::sync::Arc;

use crate::audit::AuditLog;
use crate::auth::{self, Role};
use crate::cache::DekCache;
use crate::config::{Config, ProviderKind};
use crate::keyring::Keyring;
use crate::kms::aws::AwsKms;
use crate::kms::aws::queue::SqsKeyEventQueue;
use crate::kms::budget::BudgetedProvider;
use crate::kms::local::LocalKms;
use crate::kms::{KeyProvider, KmsError};
use crate::metrics::{MeteredProvider, Metrics};
use crate::platform_kek::CreationQuota;
use crate::rate_limit::RateLimiter;
use crate::services::api_keys::ApiKeys;
use crate::services::audit::Audit;
use crate::services::byok::{Byok, ByokParts};
use crate::services::platform_keks::PlatformKeks;
use crate::services::portal::Portal;
use crate::services::readiness::{self, ListenerHealth, Readiness};
use crate::services::refusals::Refusals;
use crate::services::rewrap::{Rewrap, RewrapParts};
use crate::services::vault::{Vault, VaultParts};
use crate::store::Store;
use crate::supervisor::{Stage, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("key provider: {0}")]
    Provider(#[from] KmsError),
    #[error("{0}")]
    Keyring(#[from] crate::keyring::AliasPrefixError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("data directory {0}")]
    DataDir(String),
    #[error("API keys: {0}")]
    ApiKeys(#[from] crate::error::Error),
}

pub struct Broker {
    /// Server limits and request guards read it; services got their slices at start.
    pub config: Config,
    /// Readiness (the provider) and metrics (the routing view); services hold their own handle.
    pub keyring: Arc<Keyring>,
    /// Metrics (cache stats); tests purge and inspect it.
    pub dek_cache: DekCache,
    /// Readiness (a ping); handlers never use it (they call services).
    pub store: Store,
    pub rate_limiter: RateLimiter,
    /// API key verification and administration.
    pub api_keys: ApiKeys,
    /// The audit events listing (and a flush at shutdown).
    pub audit: Audit,
    pub metrics: Arc<Metrics>,
    /// BYOK registrations, state changes and the key-state watcher's passes.
    pub byok: Arc<Byok>,
    /// Owns the background tasks; rewrap jobs started by requests are handed to it.
    pub supervisor: Supervisor,
    /// Objects and data keys.
    pub vault: Vault,
    /// Rewrap jobs and their workers.
    pub rewrap: Arc<Rewrap>,
    /// Platform KEK inventory and rotation.
    pub platform_keks: Arc<PlatformKeks>,
    /// The tenant admin portal's links and sessions.
    pub portal: Portal,
    /// The change listener's state (several brokers on one database), for readiness.
    pub listener: Option<Arc<ListenerHealth>>,
    /// Counts of requests refused before a use case (no, unknown or revoked key, wrong role,
    /// rate limit), recorded as coalesced audit events.
    pub refusals: Refusals,
}

impl Broker {
    /// Starts with the key provider the configuration names; its background tasks (the watcher,
    /// rewrap jobs, the audit writer, the database's close) belong to `supervisor`.
    pub async fn start(config: Config, supervisor: &Supervisor) -> Result<Arc<Self>, StartError> {
        // Before the local provider creates `local-kms/` inside it, so the directory is 0700 first.
        create_private_dir(&config.data_dir)?;
        let provider: Arc<dyn KeyProvider> = match config.provider {
            ProviderKind::Local => {
                Arc::new(LocalKms::open(&config.data_dir.join("local-kms")).await?)
            }
            ProviderKind::Aws => Arc::new(AwsKms::connect(&config.aws).await?),
        };
        Self::start_with_provider(config, provider, supervisor).await
    }

    /// Starts with a given key provider (tests wrap the real one to count KMS calls).
    pub async fn start_with_provider(
        config: Config,
        provider: Arc<dyn KeyProvider>,
        supervisor: &Supervisor,
    ) -> Result<Arc<Self>, StartError> {
        create_private_dir(&config.data_dir)?;
        let metrics = Arc::new(Metrics::default());
        let provider: Arc<dyn KeyProvider> = Arc::new(MeteredProvider {
            inner: provider,
            metrics: Arc::clone(&metrics),
        });
        // Outside the metering: a call the budget refuses never reaches KMS, and the KMS latency
        // recorded is KMS's own, not the wait for capacity (recorded by the budget).
        let provider = BudgetedProvider::wrap(provider, config.kms_budget, metrics.budget.clone());
        let store = Store::open_configured(&config.data_dir, config.store.clone()).await?;
        let closing = store.clone();
        supervisor.spawn(Stage::Database, "database", move |stop| async move {
            stop.cancelled().await;
            if let Err(e) = closing.close().await {
                tracing::error!(error = %e, "the database did not close cleanly");
            }
        });
        let keyring = Arc::new(
            Keyring::new(provider, &config.kek_alias_prefix)?.with_platform_policy(
                config.platform_keks.context_fields.clone(),
                CreationQuota::new(store.clone(), &config.platform_keks),
            ),
        );
        let dek_cache = DekCache::new(config.dek_cache);
        if let Some(token) = &config.bootstrap_app_key {
            auth::register_token(&store, "bootstrap-app", Role::App, &token.0).await?;
        }
        if let Some(token) = &config.bootstrap_admin_key {
            auth::register_token(&store, "bootstrap-admin", Role::Admin, &token.0).await?;
        }
        if let Some(path) = auth::bootstrap_if_empty(&store, &config.data_dir).await? {
            tracing::warn!(file = %path.display(), "no API keys were configured: created an app and an admin key and wrote them to this file (mode 0600)");
        }
        let rate_limiter = RateLimiter::new(config.rate_limit);
        let watcher = config.watcher;
        let audit = AuditLog::start(store.clone(), supervisor);
        let byok = Arc::new(Byok::new(ByokParts {
            store: store.clone(),
            keyring: Arc::clone(&keyring),
            dek_cache: dek_cache.clone(),
            audit: audit.clone(),
            metrics: Arc::clone(&metrics),
            allow_direct_key_access: config.byok_allow_direct_key_access,
        }));
        let vault = Vault::new(VaultParts {
            store: store.clone(),
            keyring: Arc::clone(&keyring),
            dek_cache: dek_cache.clone(),
            audit: audit.clone(),
            byok: Arc::clone(&byok),
            limits: config.limits,
        });
        // This process among the instances sharing the database (rewrap leases, logs): the pid
        // for operators, a random part because pids repeat across hosts and restarts.
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        tracing::info!(instance = %instance, "broker instance starting");
        let rewrap = Arc::new(Rewrap::new(RewrapParts {
            store: store.clone(),
            keyring: Arc::clone(&keyring),
            byok: Arc::clone(&byok),
            audit: audit.clone(),
            config: config.rewrap,
            supervisor: supervisor.clone(),
            instance,
        }));
        let platform_keks = Arc::new(PlatformKeks::new(
            store.clone(),
            Arc::clone(&keyring),
            audit.clone(),
        ));
        let portal = Portal::new(store.clone(), audit.clone(), config.portal.clone());
        let listener = store.is_shared().then(Arc::<ListenerHealth>::default);
        let refusals = Refusals::start(audit.clone(), supervisor);
        let broker = Arc::new(Self {
            listener,
            refusals,
            platform_keks,
            portal,
            api_keys: ApiKeys::new(store.clone(), audit.clone()),
            audit: Audit::new(audit, store.clone()),
            rate_limiter,
            config,
            keyring,
            dek_cache,
            store,
            metrics,
            byok,
            supervisor: supervisor.clone(),
            vault,
            rewrap,
        });
        let loaded_at = std::time::Instant::now();
        broker.byok.reload_bindings().await?;
        if broker.store.is_shared() {
            // Enforced from the start: a database lost right after start must not leave this
            // view trusted without limit before the coherence worker's first check confirms it.
            broker.byok.confirm_view_until(
                loaded_at
                    + broker.config.coherence.check_interval
                    + std::time::Duration::from_secs(1),
            );
        }
        broker.rewrap.resume_rewrap_jobs().await?;
        // Jobs whose instance dies later are resumed here (or on another live instance).
        let claiming = Arc::downgrade(&broker.rewrap);
        supervisor.spawn(Stage::Workers, "rewrap claims", move |stop| {
            crate::services::rewrap::run_claims(claiming, stop)
        });
        // The watcher holds only a weak reference: it also ends when the broker is dropped.
        let byok = Arc::downgrade(&broker.byok);
        supervisor.spawn(Stage::Workers, "key-state watcher", move |stop| {
            crate::services::byok::watcher::run(byok, watcher, stop)
        });
        // Several processes share a PostgreSQL database: follow what the others change.
        if broker.store.is_shared() {
            let coherence = crate::services::coherence::Coherence::new(
                broker.store.reserved(),
                Arc::downgrade(&broker.byok),
                broker.api_keys.verified_keys(),
                broker.config.coherence,
                broker.listener.clone().unwrap_or_default(),
            );
            supervisor.spawn(Stage::Workers, "coherence", move |stop| coherence.run(stop));
        }
        // Push revocation: tenant key events from the operator's queue (the watcher stays the backstop).
        if let Some(url) = &broker.config.byok_events_queue_url {
            let queue: Arc<dyn crate::kms::events::KeyEventQueue> =
                Arc::new(SqsKeyEventQueue::connect(&broker.config.aws, url).await);
            let byok = Arc::downgrade(&broker.byok);
            supervisor.spawn(Stage::Workers, "key events", move |stop| {
                crate::services::byok::push::run(byok, queue, stop)
            });
            tracing::info!("consuming tenant KMS key events (push revocation)");
        }
        // Automatic rotation on platform KEKs made before it existed (or under another period):
        // in the background, one KEK at a time; first use covers any KEK it has not reached yet.
        let rotation = Arc::downgrade(&broker.platform_keks);
        supervisor.spawn(
            Stage::Workers,
            "platform KEK rotation",
            move |stop| async move {
                if let Some(platform_keks) = rotation.upgrade() {
                    stop.run_until_cancelled(platform_keks.enable_rotation_on_existing())
                        .await;
                }
            },
        );
        let purging = broker.store.clone();
        let purge_interval = broker.config.store.retention.purge_interval;
        supervisor.spawn(Stage::Workers, "retention purge", move |stop| {
            crate::services::retention::run(purging, purge_interval, stop)
        });
        Ok(broker)
    }

    pub fn provider(&self) -> &dyn KeyProvider {
        self.keyring.provider().as_ref()
    }

    /// The metrics exposition: the recorded families and the state read now (key states, the
    /// DEK cache, revocation timing, the database pool).
    pub fn render_metrics(&self) -> String {
        self.metrics.render_broker(
            &self.keyring.bindings(),
            self.dek_cache.stats(),
            self.store.pool_stats(),
            |registry| {
                self.keyring.revocation_clock().register(registry);
                self.audit.register_metrics(registry);
            },
        )
    }

    /// Each dependency's state (`GET /readyz`); the checks run at once, each bounded in time. The
    /// key provider's check is an alias lookup: read-only and cheap.
    pub async fn readiness(&self) -> Readiness {
        let database = readiness::bounded("database", true, self.store.ping());
        let alias = format!("alias/{}/readiness-probe", self.config.kek_alias_prefix);
        let provider = readiness::bounded("key_provider", true, async {
            self.provider().find_alias(&alias).await.map(|_| ())
        });
        let (database, provider) = tokio::join!(database, provider);
        let mut checks = vec![database, provider];
        if let Some(listener) = &self.listener {
            checks.push(readiness::routing_view(self.keyring.view_trusted()));
            checks.push(listener.check());
        }
        Readiness { checks }
    }
}

/// Creates the data directory readable by the broker's user only (it holds the local master key,
/// the database and the bootstrap keys file). An existing directory is left as the operator set it.
fn create_private_dir(path: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StartError::DataDir(format!("{}: {e}", path.display())))
}
