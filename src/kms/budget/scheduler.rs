//! One region's share of the account's KMS request quota: a token bucket (`rate` per second, up
//! to `burst` saved), and, when it runs dry, a queue that hands each new token to the most
//! deserving waiter: strict priority between classes (reads, then writes, then background work),
//! round robin between tenants within a class, first come first served within a tenant. So a
//! tenant flooding writes waits behind everyone else's reads and shares the write capacity equally
//! with the other writers, and rewrap jobs take what live traffic leaves, and never less than one
//! token in [`BACKGROUND_SHARE`] while they wait, so a flood that saturates the budget (and is
//! refused for its excess) cannot stall a rewrap job.
//!
//! Waiting is bounded: a live call gives up at its deadline, and at most `max_waiters` wait at
//! once (a newcomer beyond that is refused at once), so a flood queues nothing unbounded.
//! Background calls have no deadline (their number is bounded by the rewrap workers' concurrency).
//! When nobody waits, a call that finds a token takes it without any queueing: the fast path is
//! one uncontended mutex.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// Who goes first when capacity is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// `Decrypt` for a live request: a read must not wait behind anyone's writes.
    Read = 0,
    /// `GenerateDataKey`, `Encrypt`, `ReEncrypt` for a live request.
    Write = 1,
    /// Rewrap jobs: only what live traffic leaves.
    Background = 2,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Read => "read",
            Priority::Write => "write",
            Priority::Background => "background",
        }
    }
}

const CLASSES: usize = 3;

/// Under contention, background work gets at least one of this many tokens.
pub const BACKGROUND_SHARE: u32 = 10;

/// The budget's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
    /// How many live calls may wait at once.
    pub max_waiters: usize,
}

/// Why a call got no capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its deadline passed while it waited.
    Deadline,
    /// Too many calls wait already.
    QueueFull,
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// Tenants with waiters in one class, served in turn.
#[derive(Default)]
struct Class {
    turn: VecDeque<String>,
    queues: HashMap<String, VecDeque<Waiter>>,
}

impl Class {
    fn push(&mut self, tenant: &str, waiter: Waiter) {
        let queue = self.queues.entry(tenant.to_owned()).or_default();
        if queue.is_empty() {
            self.turn.push_back(tenant.to_owned());
        }
        queue.push_back(waiter);
    }

    /// The next waiter: the front of the tenant whose turn it is; that tenant goes to the back.
    fn pop(&mut self) -> Option<Waiter> {
        let tenant = self.turn.pop_front()?;
        let queue = self.queues.get_mut(&tenant)?;
        let waiter = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&tenant);
        } else {
            self.turn.push_back(tenant);
        }
        waiter
    }

    /// Takes a waiter out (it gave up); true if it was still queued.
    fn remove(&mut self, tenant: &str, id: u64) -> bool {
        let Some(queue) = self.queues.get_mut(tenant) else {
            return false;
        };
        let before = queue.len();
        queue.retain(|w| w.id != id);
        let removed = queue.len() < before;
        if queue.is_empty() {
            self.queues.remove(tenant);
            self.turn.retain(|t| t != tenant);
        }
        removed
    }

    fn len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

struct State {
    tokens: f64,
    refilled: Instant,
    classes: [Class; CLASSES],
    /// Live waiters (read and write classes), against `max_waiters`.
    live_waiting: usize,
    /// Tokens handed to live waiters since background work last got one.
    live_grants: u32,
    next_id: u64,
}

impl State {
    fn refill(&mut self, rate: &Rate) {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + earned).min(rate.burst);
        self.refilled = now;
    }

    fn waiting(&self) -> usize {
        self.classes.iter().map(Class::len).sum()
    }

    /// Hands out the tokens there are to waiters, best first; waiters that gave up (their
    /// receiver is gone) cost nothing.
    fn dispatch(&mut self) {
        let background = Priority::Background as usize;
        while self.tokens >= 1.0 {
            let due = self.live_grants + 1 >= BACKGROUND_SHARE;
            let next = if due {
                self.classes[background].pop().map(|w| (background, w))
            } else {
                None
            };
            let Some((priority, waiter)) = next.or_else(|| {
                self.classes
                    .iter_mut()
                    .enumerate()
                    .find_map(|(i, class)| class.pop().map(|w| (i, w)))
            }) else {
                return;
            };
            if priority == background {
                self.live_grants = 0;
            } else {
                self.live_waiting -= 1;
                self.live_grants = self.live_grants.saturating_add(1);
            }
            if waiter.grant.send(()).is_ok() {
                self.tokens -= 1.0;
            }
        }
    }
}

/// One region's budget. Cloned handles share it.
pub struct RegionBudget {
    rate: Rate,
    state: Mutex<State>,
    /// Wakes the dispatcher when a call starts waiting.
    queued: Notify,
}

impl RegionBudget {
    /// A full bucket, and the task that hands tokens to waiters as they accrue (it ends when the
    /// budget is dropped). Must be called on a Tokio runtime.
    pub fn start(rate: Rate) -> Arc<Self> {
        let budget = Arc::new(Self {
            rate,
            state: Mutex::new(State {
                tokens: rate.burst,
                refilled: Instant::now(),
                classes: Default::default(),
                live_waiting: 0,
                live_grants: 0,
                next_id: 0,
            }),
            queued: Notify::new(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&budget)));
        budget
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one call's worth of capacity for `tenant` at `priority`, waiting at most until
    /// `deadline` (`None`: until granted); the time it waited.
    pub async fn acquire(
        &self,
        priority: Priority,
        tenant: &str,
        deadline: Option<Instant>,
    ) -> Result<Duration, Refusal> {
        let started = Instant::now();
        let (id, granted) = {
            let mut state = self.state();
            state.refill(&self.rate);
            // Nobody waiting: take a token if there is one. With waiters, a newcomer queues too,
            // or it would overtake them.
            if state.waiting() == 0 && state.tokens >= 1.0 {
                state.tokens -= 1.0;
                return Ok(Duration::ZERO);
            }
            let live = priority != Priority::Background;
            if live && state.live_waiting >= self.rate.max_waiters {
                return Err(Refusal::QueueFull);
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_id;
            state.next_id += 1;
            state.classes[priority as usize].push(tenant, Waiter { id, grant });
            if live {
                state.live_waiting += 1;
            }
            (id, granted)
        };
        let mut queued = Queued {
            budget: self,
            priority,
            tenant,
            id,
            armed: true,
        };
        self.queued.notify_one();
        let mut granted = granted;
        // By reference: after a timeout the receiver still tells whether a grant arrived.
        let outcome = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, &mut granted).await,
            None => Ok((&mut granted).await),
        };
        queued.armed = false;
        match outcome {
            Ok(Ok(())) => Ok(started.elapsed()),
            // The sender is only dropped unsent when the budget itself is gone.
            Ok(Err(_)) => Err(Refusal::Deadline),
            Err(_elapsed) => {
                if self.withdraw(priority, tenant, id) {
                    return Err(Refusal::Deadline);
                }
                // Popped by the dispatcher meanwhile: the grant was sent (this receiver was
                // alive) and its token spent, so use it.
                match granted.try_recv() {
                    Ok(()) => Ok(started.elapsed()),
                    Err(_) => Err(Refusal::Deadline),
                }
            }
        }
    }

    /// Takes a queued call out; true if it was still queued.
    fn withdraw(&self, priority: Priority, tenant: &str, id: u64) -> bool {
        let mut state = self.state();
        let removed = state.classes[priority as usize].remove(tenant, id);
        if removed && priority != Priority::Background {
            state.live_waiting -= 1;
        }
        removed
    }
}

/// A queued call; if its future is dropped before the outcome (the request was cancelled: the
/// client went away, a timeout fired), it leaves the queue, so it neither holds one of
/// `max_waiters` nor keeps the fast path closed until the dispatcher reaches it.
struct Queued<'a> {
    budget: &'a RegionBudget,
    priority: Priority,
    tenant: &'a str,
    id: u64,
    armed: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.budget.withdraw(self.priority, self.tenant, self.id);
        }
    }
}

/// Hands tokens to waiters as they accrue: sleeps until the next whole token while anyone waits,
/// else until someone starts waiting.
async fn dispatch(budget: Weak<RegionBudget>) {
    loop {
        let Some(budget) = budget.upgrade() else {
            return;
        };
        let pause = {
            let mut state = budget.state();
            state.refill(&budget.rate);
            state.dispatch();
            (state.waiting() > 0).then(|| {
                let missing = (1.0 - state.tokens).max(0.0);
                Duration::from_secs_f64(missing / budget.rate.per_second)
                    .max(Duration::from_micros(200))
            })
        };
        match pause {
            Some(pause) => tokio::time::sleep(pause).await,
            None => {
                // Re-checked every second, so the task ends within a second of the budget.
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), budget.queued.notified()).await;
            }
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
