//! AWS SDK configuration and clients: the broker's own KMS client, plus one client per tenant role
//! and region, built once and cached so the SDK's identity cache refreshes assumed-role
//! credentials before they expire instead of calling AssumeRole on every request.

use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig};
use aws_sdk_kms::config::{Credentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Moved to `config`, which owns the settings components take; re-exported where callers look.
pub use crate::config::kms::AwsOptions;
use crate::kms::{KekRef, KmsError, KmsFailure, TenantAccess};

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
