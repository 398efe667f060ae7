//! The `/healthz` answer.

use serde::Serialize;
use utoipa::ToSchema;

/// `{"status": "ok"}`: the process is up and answering.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}
