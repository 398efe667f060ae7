//! The narrow face of the queue that carries tenant KMS key events (CloudTrail records forwarded
//! by EventBridge) to the broker: receive a batch, delete what was handled. Services see only
//! this; the SQS client lives in `kms::aws::queue`.

use async_trait::async_trait;

/// One message as the queue delivered it. The body is an EventBridge event, not a secret, but it
/// names tenant accounts and keys: log its id, not its body.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
    /// What deletes this delivery of the message (not the message id).
    pub receipt: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("key event queue: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait KeyEventQueue: Send + Sync + 'static {
    /// Waits (long polling) until messages arrive or the wait ends; an empty batch is normal.
    async fn receive(&self) -> Result<Vec<QueueMessage>, QueueError>;

    /// Deletes a handled message. A message never deleted comes back after the queue's
    /// visibility timeout, and after its redrive policy's `maxReceiveCount` goes to the DLQ.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;
}
