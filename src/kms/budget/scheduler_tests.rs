//! The budget's order and bounds. The order is the queue's, not a race: each call is queued
//! before the next starts, and tokens come 100 ms apart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Priority, Rate, Refusal, RegionBudget};

fn budget(per_second: f64, burst: f64, max_waiters: usize) -> Arc<RegionBudget> {
    RegionBudget::start(Rate {
        per_second,
        burst,
        max_waiters,
    })
}

/// Starts one waiting call per `(priority, tenant)` (in order, each queued before the next
/// starts) and returns the order they were granted in.
async fn grant_order(budget: &Arc<RegionBudget>, calls: &[(Priority, &str)]) -> Vec<String> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (n, (priority, tenant)) in calls.iter().enumerate() {
        let (budget, order) = (Arc::clone(budget), Arc::clone(&order));
        let (priority, tenant) = (*priority, tenant.to_string());
        tasks.push(tokio::spawn(async move {
            budget.acquire(priority, &tenant, None).await.unwrap();
            order.lock().unwrap().push(format!("{tenant}{n}"));
        }));
        // Lets the call queue before the next one starts.
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(order).unwrap().into_inner().unwrap()
}

#[tokio::test]
async fn the_burst_is_served_at_once_then_calls_wait_for_the_rate() {
    let budget = budget(10.0, 5.0, 100);
    for _ in 0..5 {
        assert_eq!(
            budget.acquire(Priority::Write, "a", None).await,
            Ok(Duration::ZERO)
        );
    }
    let waited = budget.acquire(Priority::Write, "a", None).await.unwrap();
    // One token's time at 10 per second (the upper bound only catches a broken refill).
    assert!(
        (Duration::from_millis(90)..Duration::from_secs(1)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test]
async fn reads_go_before_writes_and_writes_before_background_work() {
    let budget = budget(10.0, 1.0, 100);
    budget.acquire(Priority::Write, "a", None).await.unwrap();
    let order = grant_order(
        &budget,
        &[
            (Priority::Background, "rewrap"),
            (Priority::Write, "a"),
            (Priority::Read, "b"),
            (Priority::Write, "a"),
            (Priority::Read, "a"),
        ],
    )
    .await;
    assert_eq!(order, ["b2", "a4", "a1", "a3", "rewrap0"]);
}

#[tokio::test]
async fn tenants_of_one_class_take_turns_however_many_calls_one_queued() {
    let budget = budget(10.0, 1.0, 100);
    budget.acquire(Priority::Write, "a", None).await.unwrap();
    let mut calls = vec![(Priority::Write, "a"); 6];
    calls.extend([(Priority::Write, "b"), (Priority::Write, "b")]);
    let order = grant_order(&budget, &calls).await;
    // B's two calls, queued behind A's six, are served second and fourth.
    assert_eq!(order, ["a0", "b6", "a1", "b7", "a2", "a3", "a4", "a5"]);
}

#[tokio::test]
async fn a_live_call_gives_up_at_its_deadline_and_a_full_queue_refuses_at_once() {
    let budget = budget(1.0, 1.0, 2);
    budget.acquire(Priority::Write, "a", None).await.unwrap();
    let deadline = Some(Instant::now() + Duration::from_millis(300));
    assert_eq!(
        budget.acquire(Priority::Write, "a", deadline).await,
        Err(Refusal::Deadline)
    );
    // Two live calls wait; a third is refused without waiting; background work still queues.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(Priority::Read, "b", None).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let refused_at = Instant::now();
    assert_eq!(
        budget.acquire(Priority::Write, "c", None).await,
        Err(Refusal::QueueFull)
    );
    assert!(refused_at.elapsed() < Duration::from_millis(100));
    let background = {
        let budget = Arc::clone(&budget);
        tokio::spawn(async move { budget.acquire(Priority::Background, "job", None).await })
    };
    for call in waiting {
        assert!(call.await.unwrap().is_ok());
    }
    assert!(background.await.unwrap().is_ok());
}

#[tokio::test]
async fn background_work_gets_a_share_even_when_live_calls_saturate_the_budget() {
    let budget = budget(100.0, 1.0, 100);
    budget.acquire(Priority::Write, "a", None).await.unwrap();
    let mut calls = vec![(Priority::Background, "rewrap")];
    calls.extend(vec![(Priority::Write, "a"); 12]);
    let order = grant_order(&budget, &calls).await;
    // Queued first but lowest: served once nine live calls were, not after all twelve.
    let position = order.iter().position(|c| c == "rewrap0").unwrap();
    assert_eq!(position, 9, "{order:?}");
}

#[tokio::test]
async fn a_cancelled_call_leaves_the_queue_at_once() {
    let budget = budget(1.0, 1.0, 1);
    budget.acquire(Priority::Write, "a", None).await.unwrap();
    // One live call waits (the queue's whole room), then its request is cancelled.
    let waiting = {
        let budget = Arc::clone(&budget);
        tokio::spawn(async move { budget.acquire(Priority::Write, "a", None).await })
    };
    tokio::task::yield_now().await;
    waiting.abort();
    let _ = waiting.await;
    // Its slot is free: the next call waits (until its deadline) instead of being refused.
    let deadline = Some(Instant::now() + Duration::from_millis(100));
    assert_eq!(
        budget.acquire(Priority::Write, "b", deadline).await,
        Err(Refusal::Deadline)
    );
}
