//! A rewrap worker ends only a job it still holds (review finding of "Several instances"): a
//! worker whose lease ran out while another instance took the job over must not mark that job
//! failed or completed under the new owner's feet. The store's own guard, on either backend.

use std::time::Duration;

use crate::common;

use common::broker::TestBroker;

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_end_the_job_its_successor_runs() {
    // A lease long enough that the broker's own claim scan never looks at the job meanwhile.
    let broker = TestBroker::start_local_with(
        "rewrap-lease-guard",
        &[("BYOK_BROKER_REWRAP_LEASE_MS", "600000")],
    )
    .await;
    let store = &broker.broker.store;
    let job_id = "rewrap_lease_guard";
    store
        .insert_rewrap_job(
            job_id.into(),
            "kek_id".into(),
            "arn:lease-guard".into(),
            vec!["arn:lease-guard".into()],
            "instance-x".into(),
            Duration::ZERO,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .claim_rewrap_job(job_id, "instance-y", Duration::from_secs(600))
            .await
            .unwrap(),
        "X's lease ran out: Y takes the job over"
    );

    // X, late, ends the job it thinks it still runs.
    let ended = store
        .finish_rewrap_job(
            job_id,
            "failed",
            Some("x gave up".into()),
            Some("instance-x"),
        )
        .await
        .unwrap();
    assert!(!ended);
    let job = store.get_rewrap_job(job_id).await.unwrap();
    assert_eq!(
        (job.state.as_str(), job.error),
        ("running", None),
        "Y's job was ended by X"
    );

    // Y, the holder, ends it; an admin's cancel afterwards changes nothing.
    assert!(
        store
            .finish_rewrap_job(job_id, "completed", None, Some("instance-y"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_rewrap_job(job_id, "cancelled", None, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_rewrap_job(job_id).await.unwrap().state,
        "completed"
    );
}
