//! The Vault object list and delete answers (`GET /vault/v1/kv`, `DELETE /vault/v1/kv/{id}`).
//! Fields are in alphabetical order, the order the earlier `json!` bodies had.

use serde::Serialize;
use utoipa::ToSchema;

/// `{"object": "list", "data": [...], "list_metadata": {"after", "before"}}`.
#[derive(Serialize, ToSchema)]
pub struct ObjectList<'a> {
    pub data: Vec<ObjectSummary<'a>>,
    pub list_metadata: ObjectListCursors,
    /// Always `list`.
    pub object: &'static str,
}

/// One listed object: no value, no metadata.
#[derive(Serialize, ToSchema)]
pub struct ObjectSummary<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub updated_at: &'a str,
}

/// `after`: the cursor of the next page (`null` on the last); `before`: of the previous one
/// (`null` on the first).
#[derive(Serialize, ToSchema)]
pub struct ObjectListCursors {
    pub after: Option<String>,
    pub before: Option<String>,
}

/// The answer to a delete: the deleted object's name.
#[derive(Serialize, ToSchema)]
pub struct DeletedObject<'a> {
    pub name: &'a str,
    pub success: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn list_and_delete_bytes_are_unchanged() {
        let list = ObjectList {
            data: vec![ObjectSummary {
                id: "o1",
                name: "n",
                updated_at: "2024-01-01T00:00:00Z",
            }],
            list_metadata: ObjectListCursors {
                after: Some("c1".into()),
                before: None,
            },
            object: "list",
        };
        let old = json!({"object": "list", "data": [{"id": "o1", "name": "n", "updated_at": "2024-01-01T00:00:00Z"}], "list_metadata": {"before": null, "after": "c1"}});
        assert_eq!(serde_json::to_string(&list).unwrap(), old.to_string());
        let deleted = DeletedObject {
            name: "n",
            success: true,
        };
        let old = json!({"name": "n", "success": true});
        assert_eq!(serde_json::to_string(&deleted).unwrap(), old.to_string());
    }
}
