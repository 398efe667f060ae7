//! Audit events with WorkOS event names and payloads (`vault.data.created`, `vault.dek.decrypted`,
//! ...). API-caused payloads carry the actor; none ever carries a value, a DEK or an API key.
//! Events of writes commit in the same transaction as the write. All others go through the
//! audit writer: a bounded queue (callers wait when it is full: backpressure, never a drop) whose
//! task commits whatever has queued up meanwhile in one transaction (group commit: one fsync per
//! group). `record` returns only once its event is durable, or with the reason it is not, so a
//! read is never answered without its audit event.

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::error::Error;
use crate::store::{AuditEvent, Store, StoreError};
use crate::supervisor::{Stage, Supervisor};
use crate::timestamp::Timestamp;

/// Events queued at most before callers wait.
const QUEUE: usize = 8192;
/// Events committed at most per transaction.
const BATCH: usize = 1024;

/// Builds an event. With an actor, `actor_id`, `actor_source` and `actor_name` are added, and
/// `actor_certificate_subject` when the caller's connection presented a client certificate; events
/// the broker itself causes (the key-state watcher) or that WorkOS defines without actor carry none.
pub fn event(
    actor: Option<&Principal>,
    name: &str,
    organization_id: Option<&str>,
    fields: Value,
) -> AuditEvent {
    let mut data = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(actor) = actor {
        data.insert("actor_id".into(), json!(actor.key_id));
        data.insert("actor_source".into(), json!("api"));
        data.insert("actor_name".into(), json!(actor.name));
        if let Some(subject) = &actor.client_certificate {
            data.insert("actor_certificate_subject".into(), json!(subject.as_ref()));
        }
    }
    AuditEvent {
        id: format!("event_{}", uuid::Uuid::new_v4().simple()),
        event: name.to_owned(),
        organization_id: organization_id.map(str::to_owned),
        data_json: Value::Object(data).to_string(),
        created_at: Timestamp::now().to_rfc3339(),
    }
}

/// Where to report a batch's commit outcome.
type Ack = oneshot::Sender<Result<(), StoreError>>;

enum Command {
    Event(AuditEvent, Ack),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Command>,
}

impl AuditLog {
    /// Hands the writer task to `supervisor`; it ends when shutdown reaches the audit stage (or
    /// the log is dropped), after committing every event queued until then.
    pub fn start(store: Store, supervisor: &Supervisor) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        supervisor.spawn(Stage::Audit, "audit writer", move |stop| {
            write_batches(store, receiver, stop)
        });
        Self { sender }
    }

    /// Queues an event (waiting while the queue is full) and returns once it is committed; an
    /// event that cannot be committed fails the caller (e.g. 507 `storage_full`), never silently.
    pub async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        let stopped = || Error::Internal("the audit writer has stopped".into());
        let (ack, committed) = oneshot::channel();
        self.sender
            .send(Command::Event(event, ack))
            .await
            .map_err(|_| stopped())?;
        Ok(committed.await.map_err(|_| stopped())??)
    }

    /// Returns once every event queued before the call is committed (or refused).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }
}

/// No linger: callers wait for their commit, and whatever queues while one batch commits forms
/// the next batch, so a busy broker commits large batches and an idle one answers at once.
/// On `stop`, the queue closes (later `record` calls fail) and what it holds is still committed.
async fn write_batches(
    store: Store,
    mut receiver: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut commands = Vec::with_capacity(BATCH);
    let mut stopping = false;
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut commands, BATCH) => received,
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                receiver.close();
                continue;
            }
        };
        if received == 0 {
            return;
        }
        let mut events = Vec::with_capacity(commands.len());
        let mut acks = Vec::with_capacity(commands.len());
        let mut flushes = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Event(event, ack) => {
                    events.push(event);
                    acks.push(ack);
                }
                Command::Flush(done) => flushes.push(done),
            }
        }
        if !events.is_empty() {
            let count = events.len();
            let outcome = store.insert_events(events).await;
            if let Err(e) = &outcome {
                // Not lost silently: every caller gets this error instead of a success.
                tracing::error!(error = %e, events = count, "audit events not committed; their requests fail");
            }
            for ack in acks {
                let _ = ack.send(outcome.clone());
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}
