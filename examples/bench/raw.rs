//! Baselines: raw AWS SDK calls against the same LocalStack, at the same concurrency as the
//! broker workloads they are compared with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use byok_broker::kms::aws::{AwsOptions, load_sdk_config};

use crate::load::LoadResult;

pub const TENANT_ACCOUNT: &str = "111111111111";

pub struct RawKms {
    platform: aws_sdk_kms::Client,
    tenant: aws_sdk_kms::Client,
    key: String,
    wrapped: Vec<u8>,
}

fn context() -> HashMap<String, String> {
    HashMap::from([("organization_id".to_owned(), "org_bench".to_owned())])
}

pub async fn client(endpoint: &str, account: &str) -> aws_sdk_kms::Client {
    let options = AwsOptions {
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
        static_credentials: Some((account.to_owned(), "test".into())),
        max_attempts: 1,
        ..AwsOptions::default()
    };
    aws_sdk_kms::Client::new(&load_sdk_config(&options).await)
}

pub async fn create_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description("byok-broker bench")
        .send()
        .await
        .expect("create key");
    out.key_metadata()
        .and_then(|m| m.arn())
        .expect("arn")
        .to_owned()
}

/// Runs `call` on `concurrency` tasks for `duration`.
async fn drive<F, Fut>(concurrency: usize, duration: Duration, call: F) -> LoadResult
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = Arc::clone(&call);
        tasks.push(tokio::spawn(async move {
            let mut result = LoadResult::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                if call().await {
                    result.requests += 1;
                    result.latencies_us.push(sent.elapsed().as_micros() as u64);
                } else {
                    result.errors += 1;
                }
            }
            result
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        if let Ok(r) = task.await {
            total.requests += r.requests;
            total.errors += r.errors;
            total.latencies_us.extend(r.latencies_us);
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    total
}

impl RawKms {
    pub async fn connect(endpoint: &str) -> Self {
        let platform = client(endpoint, "000000000000").await;
        let tenant = client(endpoint, TENANT_ACCOUNT).await;
        let key = create_key(&platform).await;
        let out = platform
            .generate_data_key()
            .key_id(&key)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context()))
            .send()
            .await
            .expect("gdk");
        let wrapped = out.ciphertext_blob().expect("blob").as_ref().to_vec();
        Self {
            platform,
            tenant,
            key,
            wrapped,
        }
    }

    pub async fn generate_data_keys(&self, concurrency: usize, duration: Duration) -> LoadResult {
        let (client, key) = (self.platform.clone(), self.key.clone());
        drive(concurrency, duration, move || {
            let (client, key) = (client.clone(), key.clone());
            async move {
                client
                    .generate_data_key()
                    .key_id(key)
                    .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                    .set_encryption_context(Some(context()))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await
    }

    pub async fn decrypts(&self, concurrency: usize, duration: Duration) -> LoadResult {
        let (client, key, wrapped) = (
            self.platform.clone(),
            self.key.clone(),
            self.wrapped.clone(),
        );
        drive(concurrency, duration, move || {
            let (client, key, wrapped) = (client.clone(), key.clone(), wrapped.clone());
            async move {
                client
                    .decrypt()
                    .key_id(key)
                    .ciphertext_blob(Blob::new(wrapped))
                    .set_encryption_context(Some(context()))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await
    }

    /// ReEncrypt source → destination inside the tenant account (what the rewrap job does).
    pub async fn reencrypts(
        &self,
        source: &str,
        destination: &str,
        concurrency: usize,
        duration: Duration,
    ) -> LoadResult {
        let out = self
            .tenant
            .generate_data_key()
            .key_id(source)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context()))
            .send()
            .await
            .expect("gdk");
        let wrapped = out.ciphertext_blob().expect("blob").as_ref().to_vec();
        let (client, source, destination) = (
            self.tenant.clone(),
            source.to_owned(),
            destination.to_owned(),
        );
        drive(concurrency, duration, move || {
            let (client, source, destination, wrapped) = (
                client.clone(),
                source.clone(),
                destination.clone(),
                wrapped.clone(),
            );
            async move {
                client
                    .re_encrypt()
                    .ciphertext_blob(Blob::new(wrapped))
                    .source_key_id(source)
                    .set_source_encryption_context(Some(context()))
                    .destination_key_id(destination)
                    .set_destination_encryption_context(Some(context()))
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await
    }
}
