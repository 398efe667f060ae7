//! Listing objects a page at a time. Objects sort by (created_at, id): both immutable, so a page
//! boundary is a position that stays valid whatever happens to the object that marked it
//! (deleted, updated), and paging never skips or repeats an object that exists throughout.

use uuid::Uuid;

use super::objects::push_scope_filter;
use super::sql::{Dialect, ToValue, Value, args};
use super::{Store, StoreError};
use crate::timestamp::Timestamp;

/// Where an object sits in list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: Timestamp,
    pub id: Uuid,
}

#[derive(Debug, Clone)]
pub struct ListedObject {
    pub id: String,
    pub name: String,
    pub updated_at: String,
    pub position: ListPosition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub limit: usize,
    pub order: Order,
    /// Objects strictly after this position in `order`.
    pub after: Option<ListPosition>,
    /// Objects strictly before this position in `order` (ignored when `after` is set).
    pub before: Option<ListPosition>,
    pub search: Option<String>,
    pub updated_after: Option<Timestamp>,
    /// Only objects whose context contains all of these pairs (an API key's scope).
    pub scope: Vec<(String, String)>,
}

fn position_from(created_at: &str, id: &str) -> Result<ListPosition, StoreError> {
    let created_at = Timestamp::parse(created_at)
        .ok_or_else(|| StoreError::Internal("stored created_at is not a timestamp".into()))?;
    let id = Uuid::try_parse(id)
        .map_err(|_| StoreError::Internal("stored object id is not a UUID".into()))?;
    Ok(ListPosition { created_at, id })
}

impl Store {
    /// The list position of object `id` and its context JSON (for the caller's scope check).
    pub async fn object_position(
        &self,
        id: &str,
    ) -> Result<Option<(ListPosition, String)>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let Some(row) = c.query_opt(
                "SELECT created_at, id, context_json FROM objects WHERE id = ?1",
                args![id],
            )?
            else {
                return Ok(None);
            };
            let (created_at, id): (String, String) = (row.get(0)?, row.get(1)?);
            Ok(Some((position_from(&created_at, &id)?, row.get(2)?)))
        })
        .await
    }

    /// One page of objects plus whether more follow in the requested direction.
    pub async fn list_objects(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<ListedObject>, bool), StoreError> {
        self.read(move |c| {
            let mut sql =
                String::from("SELECT id, name, updated_at, created_at FROM objects WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            // `before` pages backwards: walk in the opposite order, then flip the page.
            let backwards = query.before.is_some() && query.after.is_none();
            let ascending = (query.order == Order::Asc) != backwards;
            if let Some(position) = query.after.or(query.before) {
                let op = if ascending { ">" } else { "<" };
                sql.push_str(&format!(
                    " AND (created_at, id) {op} (?{}, ?{})",
                    args.len() + 1,
                    args.len() + 2
                ));
                args.push(Value::Text(position.created_at.to_rfc3339()));
                args.push(Value::Text(position.id.to_string()));
            }
            if let Some(search) = &query.search {
                // A substring, case-insensitive over ASCII (SQLite's `lower`). PostgreSQL has
                // `strpos`, not `instr`; under the "C" collation its `lower` is ASCII-only too.
                let at = args.len() + 1;
                sql.push_str(&match c.dialect() {
                    Dialect::Sqlite => format!(" AND instr(lower(name), lower(?{at})) > 0"),
                    Dialect::Postgres => format!(
                        " AND strpos(lower(name COLLATE \"C\"), lower(CAST(?{at} AS TEXT) COLLATE \"C\")) > 0"
                    ),
                });
                args.push(Value::Text(search.clone()));
            }
            if let Some(after) = query.updated_after {
                sql.push_str(&format!(" AND updated_at > ?{}", args.len() + 1));
                args.push(Value::Text(after.to_rfc3339()));
            }
            push_scope_filter(c.dialect(), &mut sql, &mut args, "context_json", &query.scope);
            sql.push_str(if ascending {
                " ORDER BY created_at ASC, id ASC"
            } else {
                " ORDER BY created_at DESC, id DESC"
            });
            // Bound, not spliced: the limit does not multiply the prepared statements.
            args.push((query.limit as u64 + 1).to_value());
            sql.push_str(&format!(" LIMIT ?{}", args.len()));
            let mut page = Vec::new();
            for row in c.query(&sql, &args)? {
                let (id, created_at): (String, String) = (row.get(0)?, row.get(3)?);
                let position = position_from(&created_at, &id)?;
                page.push(ListedObject {
                    id,
                    name: row.get(1)?,
                    updated_at: row.get(2)?,
                    position,
                });
            }
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            if backwards {
                page.reverse();
            }
            Ok((page, more))
        })
        .await
    }
}
