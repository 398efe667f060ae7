//! The `/healthz` and `/readyz` answers.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::http::errors::ErrorBody;
use crate::services::readiness::Readiness as ReadinessReport;

/// `{"status": "ok"}`: the process is up and answering.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The `/readyz` answer: each dependency's state, the key provider's name, and `ready` or
/// `not_ready`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// By dependency: `database`, `key_provider`, and with several brokers on one PostgreSQL
    /// database `routing_view` and `notifications`.
    pub checks: BTreeMap<String, DependencyState>,
    /// The key provider (`aws_kms` or `local`).
    pub kms: &'static str,
    /// `ready` or `not_ready`.
    pub status: &'static str,
}

/// One dependency's state.
#[derive(Serialize, ToSchema)]
pub struct DependencyState {
    pub ready: bool,
    /// Why not (never the underlying error's text: the broker's log has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// False for a dependency whose loss degrades the broker without stopping it.
    pub required: bool,
}

impl Readiness {
    pub fn of(readiness: &ReadinessReport, kms: &'static str) -> Self {
        Self {
            checks: readiness
                .checks
                .iter()
                .map(|c| {
                    let state = DependencyState {
                        ready: c.ready,
                        reason: c.reason.clone(),
                        required: c.required,
                    };
                    (c.name.to_owned(), state)
                })
                .collect(),
            kms,
            status: if readiness.is_ready() {
                "ready"
            } else {
                "not_ready"
            },
        }
    }
}

/// The 503 answer: the error body every refusal has, with the readiness fields beside it.
#[derive(Serialize)]
pub struct NotReady<'a> {
    #[serde(flatten)]
    pub error: ErrorBody<'a>,
    #[serde(flatten)]
    pub readiness: Readiness,
}
