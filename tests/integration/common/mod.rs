//! Shared fixtures: the LocalStack that `LOCALSTACK_ENDPOINT` names (otherwise installed once and
//! started on `BYOK_TEST_LOCALSTACK_PORT`, default 4566, and left running for the next run), test
//! directories, tenant accounts and BYOK request bodies; the brokers are in `broker` and `process`,
//! the store backend under test (SQLite or PostgreSQL) in `database`.

pub mod broker;
pub mod certs;
pub mod database;
// The CLI's client, included by path: it is no part of the library's public API.
#[path = "../../../src/cli/http_client.rs"]
#[allow(dead_code)] // the tests use `send`, not the CLI's `call` helpers
pub mod http_client;
pub mod instances;
pub mod portal;
pub mod process;
pub mod throttling_proxy;
pub mod webdriver;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;
use byok_broker::context::KeyContext;
use byok_broker::data_key::DataKey;
use byok_broker::kms::aws::{AwsKms, AwsOptions, load_sdk_config};
use byok_broker::kms::{
    AliasOutcome, GeneratedDataKey, KekRef, KeyDescription, KeyProvider, KmsError, RotationStatus,
};
use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
/// The broker's own (platform) account in LocalStack.
pub const PLATFORM_ACCOUNT: &str = "000000000000";
/// A tenant's own AWS account (BYOK), and a second one to check isolation between tenants.
pub const TENANT_ACCOUNT: &str = "111111111111";
pub const OTHER_TENANT_ACCOUNT: &str = "222222222222";

/// The role in `account` that tenants let the broker assume.
pub fn role_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:role/byok-broker-access")
}

/// A BYOK key's KMS key and role (in `TENANT_ACCOUNT`), as rotation and registration send them.
pub fn key_spec(key_arn: &str) -> Value {
    json!({"key_arn": key_arn, "role_arn": role_arn(TENANT_ACCOUNT)})
}

/// A BYOK registration of `key_arn` for `org`, reached through the role in `account`.
pub fn registration(org: &str, key_arn: &str, account: &str) -> Value {
    json!({
        "match_context": {"organization_id": org},
        "provider": "aws_kms",
        "key_arn": key_arn,
        "role_arn": role_arn(account),
    })
}

/// A directory under the system's temporary directory, removed when dropped with its PostgreSQL
/// database if it has one: a test leaves nothing behind, even when it fails. Not created here
/// (the broker creates its own, private).
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!("byok-{name}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Deref for TestDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        database::drop_database(&self.0);
    }
}

/// The LocalStack endpoint, starting LocalStack if the environment does not name one.
pub fn localstack_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("LOCALSTACK_ENDPOINT") {
            return endpoint;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("localstack");
        let port = std::env::var("BYOK_TEST_LOCALSTACK_PORT").unwrap_or_else(|_| "4566".into());
        run_script(&root.join("install.sh"), &[]);
        let out = run_script(&root.join("start.sh"), &[&port]);
        out.lines()
            .last()
            .expect("start.sh prints the endpoint")
            .trim()
            .to_owned()
    })
}

fn run_script(script: &Path, args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Provider options acting as `account` (a 12-digit access key id is that account in LocalStack).
/// One attempt only: tests that expect an error must not sleep through retries.
pub fn options_for(account: &str) -> AwsOptions {
    AwsOptions {
        endpoint_url: Some(localstack_endpoint().to_owned()),
        region: Some(REGION.into()),
        static_credentials: Some((account.into(), "test".into())),
        max_attempts: 1,
        ..AwsOptions::default()
    }
}

/// The broker's provider, as the platform account.
pub async fn broker_kms() -> AwsKms {
    AwsKms::connect(&options_for(PLATFORM_ACCOUNT))
        .await
        .expect("provider")
}

/// A raw KMS client acting inside `account`: how tests play the tenant (create, disable keys).
pub async fn raw_kms(account: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&load_sdk_config(&options_for(account)).await)
}

/// Creates a symmetric key in `account` and returns its ARN.
pub async fn create_key(account: &str) -> String {
    let out = raw_kms(account)
        .await
        .create_key()
        .description("byok-broker test key")
        .send()
        .await
        .expect("create key");
    out.key_metadata()
        .expect("metadata")
        .arn()
        .expect("arn")
        .to_owned()
}

pub fn context(pairs: &[(&str, &str)]) -> KeyContext {
    KeyContext::new(pairs.iter().copied()).expect("valid context")
}

/// A fresh alias prefix per test, so tests sharing one LocalStack never see each other's KEKs.
pub fn unique_prefix(test: &str) -> String {
    format!("byok-test/{test}-{}", uuid::Uuid::new_v4().simple())
}

/// Wraps a provider and counts the calls that reach it: the independent witness for
/// "exactly one KMS Decrypt" claims.
pub struct CountingProvider<P> {
    pub inner: P,
    pub decrypts: AtomicU64,
    pub generates: AtomicU64,
    /// Keys created through this provider, in order.
    pub created_keys: Mutex<Vec<String>>,
    /// When set, the next alias lookup answers "absent" without asking KMS: the lookup of a
    /// process that ran just before another process created the alias.
    pub hide_next_alias: AtomicBool,
    /// When set, `GetKeyRotationStatus` is refused (AccessDenied), as for a tenant role lacking
    /// `kms:GetKeyRotationStatus`.
    pub refuse_rotation_status: AtomicBool,
}

impl<P> CountingProvider<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            decrypts: AtomicU64::new(0),
            generates: AtomicU64::new(0),
            created_keys: Mutex::new(Vec::new()),
            hide_next_alias: AtomicBool::new(false),
            refuse_rotation_status: AtomicBool::new(false),
        }
    }
    pub fn decrypt_calls(&self) -> u64 {
        self.decrypts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for CountingProvider<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn generate_data_key(
        &self,
        kek: &KekRef,
        context: &KeyContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        self.generates.fetch_add(1, Ordering::SeqCst);
        self.inner.generate_data_key(kek, context).await
    }
    async fn decrypt(
        &self,
        kek: &KekRef,
        wrapped: &[u8],
        context: &KeyContext,
    ) -> Result<DataKey, KmsError> {
        self.decrypts.fetch_add(1, Ordering::SeqCst);
        self.inner.decrypt(kek, wrapped, context).await
    }
    async fn encrypt(
        &self,
        kek: &KekRef,
        key: &DataKey,
        context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.inner.encrypt(kek, key, context).await
    }
    async fn reencrypt(
        &self,
        source: &KekRef,
        wrapped: &[u8],
        source_context: &KeyContext,
        destination: &KekRef,
        destination_context: &KeyContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.inner
            .reencrypt(
                source,
                wrapped,
                source_context,
                destination,
                destination_context,
            )
            .await
    }
    async fn describe(&self, kek: &KekRef) -> Result<KeyDescription, KmsError> {
        self.inner.describe(kek).await
    }
    async fn find_alias(&self, alias: &str) -> Result<Option<String>, KmsError> {
        if self.hide_next_alias.swap(false, Ordering::SeqCst) {
            return Ok(None);
        }
        self.inner.find_alias(alias).await
    }
    async fn create_key(&self, description: &str) -> Result<String, KmsError> {
        let id = self.inner.create_key(description).await?;
        self.created_keys
            .lock()
            .expect("not poisoned")
            .push(id.clone());
        Ok(id)
    }
    async fn create_alias(&self, alias: &str, key_id: &str) -> Result<AliasOutcome, KmsError> {
        self.inner.create_alias(alias, key_id).await
    }
    async fn schedule_key_deletion(&self, key_id: &str) -> Result<(), KmsError> {
        self.inner.schedule_key_deletion(key_id).await
    }
    async fn enable_key_rotation(&self, kek: &KekRef, period_days: u32) -> Result<(), KmsError> {
        self.inner.enable_key_rotation(kek, period_days).await
    }
    async fn key_rotation_status(&self, kek: &KekRef) -> Result<RotationStatus, KmsError> {
        if self.refuse_rotation_status.load(Ordering::SeqCst) {
            return Err(KmsError::new(
                byok_broker::kms::KmsFailure::AccessDenied,
                "not authorized to perform kms:GetKeyRotationStatus",
            ));
        }
        self.inner.key_rotation_status(kek).await
    }
    async fn rotate_key_on_demand(&self, kek: &KekRef) -> Result<(), KmsError> {
        self.inner.rotate_key_on_demand(kek).await
    }
}
