//! Settings of the key provider: which one runs, and how the AWS one reaches KMS and STS.
//! Plain values the provider takes; loaded and validated by `config`. Secrets never print.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Embedded provider: KEKs sealed under a master key in the data directory.
    Local,
    /// AWS KMS through the standard AWS configuration (`AWS_ENDPOINT_URL` for LocalStack).
    Aws,
}

/// Settings for the AWS provider. Everything left `None` comes from the standard AWS configuration
/// (environment, profile, IMDS/ECS/IRSA), so `AWS_ENDPOINT_URL` points the broker at LocalStack.
#[derive(Clone)]
pub struct AwsOptions {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    /// Static credentials, for tests and demos only; production uses the default chain.
    pub static_credentials: Option<(String, String)>,
    pub connect_timeout: Duration,
    /// Bound on one HTTP attempt; a tenant whose KMS hangs costs at most this per attempt.
    pub attempt_timeout: Duration,
    /// Bound on a whole call including retries.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    /// Lifetime of assumed-role sessions for tenant keys.
    pub tenant_session_length: Duration,
    /// How many tenant clients (role × region) stay cached.
    pub tenant_client_capacity: u64,
    /// STS endpoint for tenant `AssumeRole` calls (a regional or VPC endpoint); `None` uses the
    /// same endpoint resolution as KMS.
    pub sts_endpoint_url: Option<String>,
}

impl Default for AwsOptions {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            region: None,
            static_credentials: None,
            connect_timeout: Duration::from_millis(3100),
            attempt_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            tenant_session_length: Duration::from_secs(900),
            tenant_client_capacity: 10_000,
            sts_endpoint_url: None,
        }
    }
}

impl fmt::Debug for AwsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsOptions")
            .field("endpoint_url", &self.endpoint_url)
            .field("sts_endpoint_url", &self.sts_endpoint_url)
            .field("region", &self.region)
            .field(
                "static_credentials",
                &self
                    .static_credentials
                    .as_ref()
                    .map(|(id, _)| (id, "<redacted>")),
            )
            .field("attempt_timeout", &self.attempt_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}
