//! AWS SDK configuration and clients: the broker's own KMS client, plus one client per tenant role
//! and region, built once and cached so the SDK's identity cache refreshes assumed-role
//! credentials before they expire instead of calling AssumeRole on every request.

use std::fmt;
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_kms::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

use crate::kms::{KekRef, KmsError, KmsFailure, TenantAccess};

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

/// Loads the shared SDK configuration: one HTTP client (ring TLS) and connection pool for all clients.
pub async fn load_sdk_config(options: &AwsOptions) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout)
        .operation_attempt_timeout(options.attempt_timeout)
        .operation_timeout(options.operation_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(options.max_attempts.max(1)));
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some((id, secret)) = &options.static_credentials {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "static"));
    }
    loader.load().await
}

/// The region a KEK lives in: explicit, else the one in its ARN, else the broker's default. A
/// region that is not a DNS host label (`us east 1`, `us,east-1`, a slash) is refused here: the
/// SDK would fail to build the request and the failure would read as the broker's own.
pub(super) fn region_of<'a>(kek: &'a KekRef, default: &'a str) -> Result<&'a str, KmsError> {
    let region = kek.region_hint().unwrap_or(default);
    if is_host_label(region) {
        Ok(region)
    } else {
        Err(KmsError::new(
            KmsFailure::InvalidKeyId,
            "the KEK's region is not a valid host label",
        ))
    }
}

/// 1-63 ASCII letters, digits and hyphens, not starting or ending with a hyphen (RFC 1123).
fn is_host_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Builds a KMS client that acts as the tenant role. The STS client inside reuses the base
/// credentials and HTTP client, and the base endpoint unless `sts_endpoint` names another.
pub(super) async fn tenant_client(
    base: &SdkConfig,
    access: &TenantAccess,
    region: &str,
    session_length: Duration,
    sts_endpoint: Option<&str>,
) -> aws_sdk_kms::Client {
    let sts_config = match sts_endpoint {
        Some(url) => base.to_builder().endpoint_url(url).build(),
        None => base.clone(),
    };
    let mut provider = AssumeRoleProvider::builder(&access.role_arn)
        .session_name("byok-broker")
        .session_length(session_length)
        .configure(&sts_config);
    if let Some(external_id) = &access.external_id {
        provider = provider.external_id(external_id);
    }
    let provider = provider.build().await;
    let config = aws_sdk_kms::config::Builder::from(base)
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .region(Region::new(region.to_owned()))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// A client with the broker's own credentials in another region.
pub(super) fn regional_client(base: &SdkConfig, region: &str) -> aws_sdk_kms::Client {
    let config = aws_sdk_kms::config::Builder::from(base)
        .region(Region::new(region.to_owned()))
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_the_arn_unless_given() {
        let mut kek = KekRef::platform("arn:aws:kms:eu-west-1:111111111111:key/abc");
        assert_eq!(region_of(&kek, "us-east-1"), Ok("eu-west-1"));
        kek.region = Some("eu-central-1".into());
        assert_eq!(region_of(&kek, "us-east-1"), Ok("eu-central-1"));
        assert_eq!(
            region_of(&KekRef::platform("abc"), "us-east-1"),
            Ok("us-east-1")
        );
    }

    #[test]
    fn a_region_that_is_not_a_host_label_is_an_invalid_key_id() {
        for region in [
            "us east 1",
            "us,east-1",
            "us-east-1/x",
            "-us-east-1",
            "us-east-1-",
        ] {
            let kek = KekRef::platform(format!("arn:aws:kms:{region}:111111111111:key/abc"));
            assert_eq!(
                region_of(&kek, "us-east-1").map_err(|e| e.failure),
                Err(KmsFailure::InvalidKeyId),
                "{region:?}"
            );
        }
    }

    #[test]
    fn debug_redacts_the_secret_key() {
        let options = AwsOptions {
            static_credentials: Some(("AKIDEXAMPLE".into(), "wJalrXUtnFEMI-secret".into())),
            ..AwsOptions::default()
        };
        let printed = format!("{options:?}");
        assert!(
            printed.contains("AKIDEXAMPLE") && !printed.contains("wJalr"),
            "{printed}"
        );
    }
}
