//! The typed rewrap job body serializes to the same bytes as the `json!` body it replaced.

use serde_json::json;

use super::*;
use crate::rewrap::RewrapJobRecord;

#[test]
fn rewrap_job_bytes_are_unchanged() {
    let status = RewrapStatus {
        job: RewrapJobRecord {
            id: "rewrap_1".into(),
            source_kind: "byok_key_id".into(),
            source_id: "byok_1".into(),
            source_keks: vec!["arn:old".into()],
            state: "done".into(),
            total: 10,
            done: 7,
            skipped: 2,
            failed: 1,
            checkpoint_seq: 3,
            started_at: "2024-01-01T00:00:00Z".into(),
            finished_at: Some("2024-01-01T00:00:03Z".into()),
            error: None,
        },
        remaining: 0,
        failures: vec![("access_denied".into(), 1)],
    };
    let job = &status.job;
    // 10 objects in 3 s, rounded to 0.1.
    let old = json!({
        "object": "rewrap_job",
        "id": job.id,
        "source": {job.source_kind.clone(): job.source_id},
        "state": job.state,
        "total": job.total,
        "done": job.done,
        "skipped": job.skipped,
        "failed": job.failed,
        "failures": [{"reason": "access_denied", "objects": 1}],
        "remaining": status.remaining,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "objects_per_second": 3.3,
        "error": job.error,
    });
    let typed = serde_json::to_string(&RewrapJob::of(&status)).unwrap();
    assert_eq!(typed, old.to_string());
}
