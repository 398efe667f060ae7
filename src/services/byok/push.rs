//! Push revocation: tenant KMS key events (CloudTrail records that EventBridge forwards to an SQS
//! queue) acted on as they arrive, instead of at the watcher's next pass. `DisableKey` and
//! `ScheduleKeyDeletion` of a registered CMK revoke at once, through the same store write as the
//! watcher (so other instances learn it through coherence) plus a local purge of its DEKs; calls
//! that may change who can use the key, or may make it usable again, trigger the registration's
//! verification (a GenerateDataKey + Decrypt round trip through the tenant's role with the
//! binding's context), and only a verdict from KMS changes the state.
//!
//! A message is deleted once handled (or found to concern no registered key); one that cannot be
//! read, or whose handling failed (store or KMS unavailable), is left for the queue to deliver
//! again and, after its redrive policy's receive count, to the dead-letter queue. The watcher stays
//! the backstop for lost events. Every instance may consume: SQS gives each message to one
//! consumer at a time, and handling is idempotent.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Byok;
use super::key_event::{Action, KeyEvent, KeyName, parse};
use super::verify::verify_kek;
use crate::error::Error;
use crate::keyring::bindings::kek_ref;
use crate::kms::events::{KeyEventQueue, QueueMessage};
use crate::store::TenantKekRecord;

/// Pause after a failed receive, doubled up to [`MAX_RETRY`]: a queue that is down is not hammered.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Runs until `stop` is cancelled or the BYOK service is dropped.
pub async fn run(byok: Weak<Byok>, queue: Arc<dyn KeyEventQueue>, stop: CancellationToken) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(received) = stop.run_until_cancelled(queue.receive()).await else {
            return;
        };
        let messages = match received {
            Ok(messages) => {
                retry = FIRST_RETRY;
                messages
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = retry.as_millis() as u64, "cannot receive key events; the watcher's polling still applies");
                if stop
                    .run_until_cancelled(tokio::time::sleep(retry))
                    .await
                    .is_none()
                {
                    return;
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        let Some(byok) = byok.upgrade() else {
            return;
        };
        // A batch's messages at once: a slow check of one key never delays another's revocation.
        let handling = futures_util::future::join_all(
            messages
                .iter()
                .map(|message| handle_message(&byok, queue.as_ref(), message)),
        );
        if stop.run_until_cancelled(handling).await.is_none() {
            return;
        }
    }
}

async fn handle_message(byok: &Byok, queue: &dyn KeyEventQueue, message: &QueueMessage) {
    let event = match parse(&message.body) {
        Ok(Some(event)) => event,
        Ok(None) => {
            byok.metrics.record_key_event("irrelevant");
            tracing::debug!(message_id = %message.id, "key event not about a key change; deleted");
            delete(queue, message).await;
            return;
        }
        Err(e) => {
            byok.metrics.record_key_event("malformed");
            // Not deleted: the queue's redrive policy moves it to the dead-letter queue.
            tracing::warn!(message_id = %message.id, error = %e, "left for the dead-letter queue");
            return;
        }
    };
    match byok.handle_key_event(&event).await {
        Ok(()) => {
            byok.metrics.record_key_event("handled");
            delete(queue, message).await;
        }
        Err(e) => {
            byok.metrics.record_key_event("failed");
            tracing::warn!(message_id = %message.id, event = %event.name, error = %e, "key event not handled; the queue delivers it again");
        }
    }
}

async fn delete(queue: &dyn KeyEventQueue, message: &QueueMessage) {
    if let Err(e) = queue.delete(&message.receipt).await {
        // Delivered again later and handled again: harmless, handling is idempotent.
        tracing::warn!(message_id = %message.id, error = %e, "could not delete a handled key event");
    }
}

impl Byok {
    /// Acts on `event` for every registered CMK it names; events about other keys change nothing.
    /// An error (store or KMS unavailable) means the event should be delivered again.
    pub async fn handle_key_event(&self, event: &KeyEvent) -> Result<(), Error> {
        let bindings = self.keyring.bindings();
        let mut result = Ok(());
        for binding in bindings.all() {
            for kek in &binding.record.keks {
                let Some(registered) = KeyName::from_arn(&kek.key_arn) else {
                    continue;
                };
                if !event.keys.contains(&registered) {
                    continue;
                }
                let handled = match event.action {
                    Action::Revoke(reason) => {
                        self.revoke_on_event(event, &registered, &kek.key_arn, reason)
                            .await
                    }
                    Action::Verify => self.verify_on_event(kek, &binding.match_context).await,
                };
                if let Err(e) = handled {
                    result = Err(e);
                }
            }
        }
        result
    }

    async fn revoke_on_event(
        &self,
        event: &KeyEvent,
        key: &KeyName,
        key_arn: &str,
        reason: &str,
    ) -> Result<(), Error> {
        // Only the key's own account can disable or schedule the deletion of its key, and
        // EventBridge stamps the sender's account: an event from another account is forged.
        if event.account != key.account {
            tracing::warn!(key_arn, sender = %event.account, event = %event.name, "ignored a revocation event sent by another account than the key's");
            return Ok(());
        }
        tracing::info!(key_arn, event = %event.name, "tenant CMK revoked by a key event");
        self.record_kek_state(key_arn, false, Some(reason.to_owned()), None)
            .await?;
        // Also when the state was already recorded (by another instance): this process's DEKs.
        self.dek_cache.purge_kek(key_arn).await;
        Ok(())
    }

    /// The registration's verification; a verdict from KMS sets the state, a transient failure
    /// is returned (the event comes again; meanwhile the state stays as it was).
    async fn verify_on_event(
        &self,
        kek: &TenantKekRecord,
        match_context: &crate::context::KeyContext,
    ) -> Result<(), Error> {
        let seen_seq = Some(kek.state_seq);
        match verify_kek(self.provider(), &kek_ref(kek), match_context).await {
            Ok(()) => {
                self.record_kek_state(&kek.key_arn, true, None, seen_seq)
                    .await
            }
            Err(Error::ByokVerificationFailed { reason, .. }) => {
                self.record_kek_state(&kek.key_arn, false, Some(reason.to_owned()), None)
                    .await?;
                self.dek_cache.purge_kek(&kek.key_arn).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
