//! Rewrap job wire shapes (`/admin/v1/rewrap-jobs`): the start request and the job's status.
//! Response fields are in alphabetical order, the order the earlier `json!` bodies had.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::rewrap::RewrapStatus;
use crate::timestamp::Timestamp;

/// `POST /admin/v1/rewrap-jobs`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRewrapJobRequest {
    pub source: RewrapSourceRequest,
}

/// Exactly one of the two names the source; the handler checks that.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RewrapSourceRequest {
    #[serde(default)]
    pub byok_key_id: Option<String>,
    #[serde(default)]
    pub kek_id: Option<String>,
}

/// `rewrap_job`.
#[derive(Serialize, ToSchema)]
pub struct RewrapJob<'a> {
    pub done: u64,
    pub error: Option<&'a str>,
    pub failed: u64,
    pub failures: Vec<Failure<'a>>,
    pub finished_at: Option<&'a str>,
    pub id: &'a str,
    pub object: &'static str,
    pub objects_per_second: f64,
    pub remaining: u64,
    pub skipped: u64,
    /// `{"byok_key": <id>}` or `{"kek": <id>}`: what the job moves objects off.
    #[schema(value_type = HashMap<String, String>)]
    pub source: Source<'a>,
    pub started_at: &'a str,
    pub state: &'a str,
    pub total: u64,
}

impl<'a> RewrapJob<'a> {
    pub fn of(status: &'a RewrapStatus) -> Self {
        let job = &status.job;
        Self {
            done: job.done,
            error: job.error.as_deref(),
            failed: job.failed,
            failures: status
                .failures
                .iter()
                .map(|(reason, objects)| Failure {
                    objects: *objects,
                    reason,
                })
                .collect(),
            finished_at: job.finished_at.as_deref(),
            id: &job.id,
            object: "rewrap_job",
            objects_per_second: objects_per_second(status),
            remaining: status.remaining,
            skipped: job.skipped,
            source: Source {
                kind: &job.source_kind,
                id: &job.source_id,
            },
            started_at: &job.started_at,
            state: &job.state,
            total: job.total,
        }
    }
}

/// Objects handled per second since the start (until the end, for a finished job), to 0.1.
fn objects_per_second(status: &RewrapStatus) -> f64 {
    let job = &status.job;
    let started = Timestamp::parse(&job.started_at);
    let until = job
        .finished_at
        .as_deref()
        .and_then(Timestamp::parse)
        .unwrap_or_else(Timestamp::now);
    let seconds = started.map_or(0.0, |s| (until.0 - s.0).max(1) as f64 / 1e6);
    let moved = job.done + job.skipped + job.failed;
    if seconds > 0.0 {
        (moved as f64 / seconds * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// How many objects failed for one reason.
#[derive(Serialize, ToSchema)]
pub struct Failure<'a> {
    pub objects: u64,
    pub reason: &'a str,
}

/// The source as it was requested: `{"byok_key_id": id}` or `{"kek_id": id}`.
pub struct Source<'a> {
    pub kind: &'a str,
    pub id: &'a str,
}

impl Serialize for Source<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.kind, self.id)?;
        map.end()
    }
}

#[cfg(test)]
#[path = "rewrap_tests.rs"]
mod tests;
