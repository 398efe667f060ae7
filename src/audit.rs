//! Audit events with WorkOS event names and payloads (`vault.data.created`, `vault.dek.decrypted`,
//! ...). API-caused payloads carry the actor; none ever carries a value, a DEK or an API key.
//! Events of writes commit in the same transaction as the write. All others go through the
//! audit writer: a bounded queue (callers wait when it is full: backpressure, never a drop) whose
//! task commits whatever has queued up in one transaction (group commit), so a cached read never
//! waits on its own fsync.

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Principal;
use crate::error::Error;
use crate::store::{AuditEvent, Store};
use crate::timestamp::Timestamp;

/// Events queued at most before callers wait.
const QUEUE: usize = 8192;
/// Events committed at most per transaction.
const BATCH: usize = 1024;
/// How long the writer lets events gather before a commit.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Builds an event. With an actor, `actor_id`, `actor_source` and `actor_name` are added; events
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
    }
    AuditEvent {
        id: format!("event_{}", uuid::Uuid::new_v4().simple()),
        event: name.to_owned(),
        organization_id: organization_id.map(str::to_owned),
        data_json: Value::Object(data).to_string(),
        created_at: Timestamp::now().to_rfc3339(),
    }
}

enum Command {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
}

pub struct AuditLog {
    sender: mpsc::Sender<Command>,
}

impl AuditLog {
    /// Starts the writer task; it ends when the log is dropped, after committing what is queued.
    pub fn start(store: Store) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        Self { sender }
    }

    /// Queues an event; waits while the queue is full.
    pub async fn record(&self, event: AuditEvent) -> Result<(), Error> {
        self.sender
            .send(Command::Event(event))
            .await
            .map_err(|_| Error::Internal("the audit writer has stopped".into()))
    }

    /// Returns once every event queued before the call is committed.
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
    }
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<Command>) {
    let mut commands = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut commands, BATCH).await > 0 {
        // Let a batch gather before committing: every commit costs an fsync, and on a busy broker
        // per-event commits would spend the CPU that requests need.
        if commands.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while commands.len() < BATCH {
                match receiver.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
        }
        let mut events = Vec::with_capacity(commands.len());
        let mut flushes = Vec::new();
        for command in commands.drain(..) {
            match command {
                Command::Event(event) => events.push(event),
                Command::Flush(done) => flushes.push(done),
            }
        }
        commit(&store, events).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Commits a batch, retrying with backoff while the database refuses; an event is never dropped
/// without an error in the log naming how many.
async fn commit(store: &Store, events: Vec<AuditEvent>) {
    if events.is_empty() {
        return;
    }
    let mut delay = std::time::Duration::from_millis(50);
    for attempt in 1..=8 {
        match store.insert_events(events.clone()).await {
            Ok(()) => return,
            Err(e) if attempt < 8 => {
                tracing::warn!(error = %e, attempt, events = events.len(), "audit batch not committed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "audit events LOST: the database refused them 8 times")
            }
        }
    }
}
