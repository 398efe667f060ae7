//! Audit events with WorkOS event names and payloads (`vault.data.created`, `vault.dek.decrypted`,
//! ...). API-caused payloads carry the actor; none ever carries a value, a DEK or an API key.
//! Events of writes commit in the same transaction as the write. All others go through the
//! audit writer: a bounded queue (callers wait when it is full: backpressure, never a drop) whose
//! task makes whatever has queued up meanwhile durable at once, outside the object database's
//! writer (`Store::append_audit_events`: SQLite's append-only audit log, one `fdatasync` per
//! group; PostgreSQL's audit connection, one transaction per group). `record` returns only once
//! its event is durable, or with the reason it is not, so a read is never answered without its
//! audit event. On SQLite the indexer task then moves logged events into the events table, off
//! the request path.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
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
        // Time-ordered (UUIDv7): the events table's id index grows at its end, so indexing a
        // batch touches a few pages instead of one random page per event.
        id: format!("event_{}", uuid::Uuid::now_v7().simple()),
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
    stats: Arc<WriterStats>,
    store: Store,
}

/// What the writer task measures, for metrics.
struct WriterStats {
    /// Seconds per group commit (the transaction that makes a batch durable).
    commit_seconds: Histogram,
    /// Events per group commit.
    batch_events: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            // 0.1 ms to about 3 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            // 1 to 1,024 events: the batch bound.
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

impl AuditLog {
    /// Hands the writer and indexer tasks to `supervisor`; the writer ends when shutdown reaches
    /// the audit stage (or the log is dropped), after making every event queued until then
    /// durable and indexing the log.
    pub fn start(store: Store, supervisor: &Supervisor) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let measuring = Arc::clone(&stats);
        let writing = store.clone();
        supervisor.spawn(Stage::Audit, "audit writer", move |stop| {
            write_batches(writing, receiver, measuring, stop)
        });
        let indexing = store.clone();
        supervisor.spawn(Stage::Audit, "audit indexer", move |stop| {
            index_log(indexing, stop)
        });
        Self {
            sender,
            stats,
            store,
        }
    }

    /// The queue's depth now and the writer's commit latency and batch sizes.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let queued = self.sender.max_capacity() - self.sender.capacity();
        registry.register(
            "byok_broker_audit_queue_depth",
            "Audit events (and flushes) waiting for the audit writer; callers wait once it is full",
            ConstGauge::new(i64::try_from(queued).unwrap_or(i64::MAX)),
        );
        registry.register(
            "byok_broker_audit_queue_capacity",
            "The audit writer's queue bound",
            ConstGauge::new(i64::try_from(QUEUE).unwrap_or(i64::MAX)),
        );
        if let Some(backlog) = self.store.audit_log_backlog_now() {
            registry.register(
                "byok_broker_audit_log_unindexed_bytes",
                "Bytes of durable audit events in the SQLite audit log not yet in the events table \
                 (appends wait beyond 64 MiB)",
                ConstGauge::new(i64::try_from(backlog).unwrap_or(i64::MAX)),
            );
        }
        registry.register(
            "byok_broker_audit_commit_duration_seconds",
            "Time to make one group of audit events durable (their requests wait for it)",
            self.stats.commit_seconds.clone(),
        );
        registry.register(
            "byok_broker_audit_batch_events",
            "Audit events committed per group commit",
            self.stats.batch_events.clone(),
        );
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

    /// Returns once every event queued before the call is committed (or refused) and, on
    /// SQLite, moved from the log into the events table (as far as the database allows: a full
    /// database leaves them in the log, durable, until space is freed).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.sender.send(Command::Flush(done)).await.is_ok() {
            let _ = committed.await;
        }
        index_until_caught_up(&self.store).await;
    }
}

/// No linger: callers wait for their commit, and whatever queues while one batch commits forms
/// the next batch, so a busy broker commits large batches and an idle one answers at once.
/// On `stop`, the queue closes (later `record` calls fail) and what it holds is still committed.
async fn write_batches(
    store: Store,
    mut receiver: mpsc::Receiver<Command>,
    stats: Arc<WriterStats>,
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
            // Stopping: what the log holds goes into the table before the database closes (what
            // cannot, stays durable in the log and is indexed at the next start).
            index_until_caught_up(&store).await;
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
            let started = Instant::now();
            let outcome = store.append_audit_events(events).await;
            stats
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            stats.batch_events.observe(count as f64);
            if let Err(e) = &outcome {
                // Not lost silently: every caller gets this error instead of a success.
                tracing::error!(error = %e, events = count, "audit events not recorded; their requests fail");
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

/// How long the indexer lets events accumulate after an append before it moves them: one
/// transaction then carries many events, writing each index page it touches once for all of them
/// (a transaction per small batch rewrote the same pages, and synced them, again and again).
const INDEX_LINGER: Duration = Duration::from_millis(100);

/// Moves events from the SQLite audit log into the events table once some were appended (after
/// [`INDEX_LINGER`]) and once a second (to retry after a failure); on `stop`, returns. The writer
/// indexes what is left after its last append; listing and export index first.
async fn index_log(store: Store, stop: CancellationToken) {
    loop {
        index_until_caught_up(&store).await;
        tokio::select! {
            () = store.audit_log_appended() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(INDEX_LINGER) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Index passes until the log is caught up or a pass fails (logged; retried later).
async fn index_until_caught_up(store: &Store) {
    loop {
        match store.index_audit_log().await {
            Ok(pass) if pass.remaining > 0 && pass.indexed > 0 => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "audit log events not indexed yet (they are durable in the log); retrying");
                return;
            }
        }
    }
}
