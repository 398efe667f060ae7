//! The owner of every background task: `main` (or a test) creates one, components hand it their
//! futures instead of spawning them, and `shutdown` stops them stage by stage, in order, each stage
//! within a bound: workers at a checkpoint, then the audit writer's flush, then the database.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// Shutdown stages, in the order they stop: a later stage keeps serving the earlier ones while
/// they wind down (rewrap jobs write their checkpoint through the database, watchers audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The key-state watcher (with the platform-KEK watch) and rewrap jobs: stop at a checkpoint.
    Workers,
    /// The audit writer: commits every queued event, then ends.
    Audit,
    /// The store: its writer thread commits what is queued and joins; readers close.
    Database,
}

const STAGES: [Stage; 3] = [Stage::Workers, Stage::Audit, Stage::Database];

/// One stage's tasks and the signal that asks them to stop.
#[derive(Default)]
struct StageTasks {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// Set once shutdown reached this stage: later tasks are refused, not left running.
    closed: bool,
}

impl StageTasks {
    /// Forgets tasks that already ended (a JoinSet keeps them until joined), logging panics.
    fn reap_finished(&mut self) {
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            self.forget(ended);
        }
    }

    fn forget(&mut self, ended: Result<(Id, ()), tokio::task::JoinError>) {
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let name = self.names.remove(&id).unwrap_or("unnamed");
        if let Err(e) = ended
            && e.is_panic()
        {
            // The panic's payload is not logged: it could quote anything the task held.
            tracing::error!(task = name, "background task panicked");
        }
    }
}

/// A cheap handle (clones share the tasks): the broker keeps one to start rewrap jobs.
#[derive(Clone, Default)]
pub struct Supervisor {
    stages: Arc<[Mutex<StageTasks>; 3]>,
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    fn stage(&self, stage: Stage) -> MutexGuard<'_, StageTasks> {
        let index = STAGES.iter().position(|s| *s == stage).unwrap_or(0);
        // A poisoned lock only means a panic elsewhere while holding it; the set is still sound.
        self.stages[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `task(stop)` as a task of `stage`; `stop` is cancelled when shutdown reaches the stage,
    /// and the task should then end at its next checkpoint. After that, new tasks are refused:
    /// false (and `task` never called) once the broker is shutting down.
    pub fn spawn<F, Fut>(&self, stage: Stage, name: &'static str, task: F) -> bool
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.stage(stage);
        tasks.reap_finished();
        if tasks.closed {
            tracing::warn!(task = name, "not started: the broker is shutting down");
            return false;
        }
        let future = task(tasks.stop.child_token());
        let handle = tasks.tasks.spawn(future);
        tasks.names.insert(handle.id(), name);
        true
    }

    /// Tasks not yet known to have ended, over every stage (0 after `shutdown`).
    pub fn running(&self) -> usize {
        STAGES
            .iter()
            .map(|stage| {
                let mut tasks = self.stage(*stage);
                tasks.reap_finished();
                tasks.tasks.len()
            })
            .sum()
    }

    /// Stops every stage in order. Each stage gets `bound` to end on its own; what is still running
    /// then is aborted (and logged by name) so shutdown always ends.
    pub async fn shutdown(&self, bound: Duration) {
        for stage in STAGES {
            let mut stopping = {
                let mut state = self.stage(stage);
                state.closed = true;
                state.stop.cancel();
                StageTasks {
                    tasks: std::mem::take(&mut state.tasks),
                    names: std::mem::take(&mut state.names),
                    ..StageTasks::default()
                }
            };
            let drained = tokio::time::timeout(bound, async {
                while let Some(ended) = stopping.tasks.join_next_with_id().await {
                    stopping.forget(ended);
                }
            })
            .await;
            if drained.is_err() {
                let late: Vec<&str> = stopping.names.values().copied().collect();
                tracing::warn!(?stage, tasks = ?late, ?bound, "aborting tasks that outlived the bound");
                stopping.tasks.shutdown().await;
            }
            tracing::debug!(?stage, "stage stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_stop_in_order_and_a_task_past_its_bound_is_aborted() {
        let supervisor = Supervisor::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        // Spawned in reverse order: the stage, not the spawn order, decides when a task stops.
        for (stage, name) in [
            (Stage::Database, "database"),
            (Stage::Audit, "audit"),
            (Stage::Workers, "worker"),
        ] {
            let order = Arc::clone(&order);
            supervisor.spawn(stage, name, move |stop| async move {
                stop.cancelled().await;
                order.lock().unwrap().push(name);
            });
        }
        // Ignores its stop signal: shutdown must still end, by aborting it after the bound.
        supervisor.spawn(Stage::Workers, "stuck", |_| std::future::pending());
        assert_eq!(supervisor.running(), 4);

        let started = std::time::Instant::now();
        supervisor.shutdown(Duration::from_millis(100)).await;

        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(*order.lock().unwrap(), ["worker", "audit", "database"]);
        assert_eq!(supervisor.running(), 0);
    }
}
