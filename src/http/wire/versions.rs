//! The `list_versions` answer (`GET /vault/v1/kv/{id}/versions`). Fields are in alphabetical
//! order, the order the earlier `json!` body had.

use serde::Serialize;
use utoipa::ToSchema;

use crate::vault::VersionRecord;

/// `{"data": [...], "list_metadata": {"after": null, "before": null}}`: every version in one
/// page, so both cursors are always null.
#[derive(Serialize, ToSchema)]
pub struct VersionList<'a> {
    pub data: Vec<Version<'a>>,
    pub list_metadata: NoCursors,
}

impl<'a> VersionList<'a> {
    pub fn of(versions: &'a [VersionRecord]) -> Self {
        Self {
            data: versions.iter().map(Version::of).collect(),
            list_metadata: NoCursors {
                after: None,
                before: None,
            },
        }
    }
}

/// Serializes as `{"after": null, "before": null}`.
#[derive(Serialize, ToSchema)]
pub struct NoCursors {
    after: Option<&'static str>,
    before: Option<&'static str>,
}

/// `ObjectVersion`.
#[derive(Serialize, ToSchema)]
pub struct Version<'a> {
    pub created_at: &'a str,
    pub current_version: bool,
    pub etag: &'a str,
    pub id: &'a str,
    pub size: u64,
}

impl<'a> Version<'a> {
    fn of(version: &'a VersionRecord) -> Self {
        Self {
            created_at: &version.created_at,
            current_version: version.current,
            etag: &version.etag,
            id: &version.id,
            size: version.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn version_list_bytes_are_unchanged() {
        let versions = vec![VersionRecord {
            id: "v1".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            size: 6,
            etag: "e1".into(),
            current: true,
        }];
        let data: Vec<Value> = versions.iter().map(|v| json!({"id": v.id, "created_at": v.created_at, "current_version": v.current, "etag": v.etag, "size": v.size})).collect();
        let old = json!({"data": data, "list_metadata": {"before": null, "after": null}});
        let typed = serde_json::to_string(&VersionList::of(&versions)).unwrap();
        assert_eq!(typed, old.to_string());
    }
}
