//! The SQS queue of tenant KMS key events, long-polled with the AWS SDK's SQS client. Dead
//! letters are the queue's own redrive policy: a message the broker cannot handle is simply not
//! deleted, so the broker needs only `sqs:ReceiveMessage` and `sqs:DeleteMessage`.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::DisplayErrorContext;

use super::clients::{AwsOptions, load_sdk_config};
use crate::kms::events::{KeyEventQueue, QueueError, QueueMessage};

/// SQS's longest long poll: fewest empty receives; a message that arrives meanwhile is returned
/// at once, so the wait adds no latency.
pub const LONG_POLL: Duration = Duration::from_secs(20);

/// SQS's largest batch.
const BATCH: i32 = 10;

pub struct SqsKeyEventQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsKeyEventQueue {
    /// A client with the broker's own identity and region (the queue is the operator's). Its
    /// attempt and operation timeouts are the KMS ones plus the long poll, which would otherwise
    /// cut every wait short.
    pub async fn connect(options: &AwsOptions, url: &str) -> Self {
        let base = load_sdk_config(options).await;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .operation_attempt_timeout(options.attempt_timeout + LONG_POLL)
            .operation_timeout(options.operation_timeout + LONG_POLL)
            .build();
        let config = aws_sdk_sqs::config::Builder::from(&base)
            .timeout_config(timeouts)
            .build();
        Self {
            client: aws_sdk_sqs::Client::from_conf(config),
            url: url.to_owned(),
        }
    }
}

fn failed<E: std::error::Error>(e: E) -> QueueError {
    QueueError(DisplayErrorContext(e).to_string())
}

#[async_trait]
impl KeyEventQueue for SqsKeyEventQueue {
    async fn receive(&self) -> Result<Vec<QueueMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(LONG_POLL.as_secs() as i32)
            .send()
            .await
            .map_err(failed)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            // Without a receipt handle a message cannot be deleted: leave it to the redrive policy.
            .filter_map(|m| {
                Some(QueueMessage {
                    id: m.message_id.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receipt: m.receipt_handle?,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(failed)?;
        Ok(())
    }
}
