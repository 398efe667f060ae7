//! Audit events: append-only rows with the WorkOS event name and payload (never a value or a key),
//! read back with filters and a cursor (the event id).

use super::audit_chain::{chunked, insert_chained, placeholders};
use super::sql::{Dialect, Sql, ToValue, Value, args};
use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: String,
    pub event: String,
    pub organization_id: Option<String>,
    pub data_json: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub events: Vec<String>,
    pub organization_id: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
    pub after: Option<String>,
    pub limit: usize,
}

/// Inserts events inside a caller's transaction (a data write and its event commit together).
/// On SQLite they are chained here, at once (its one writer needs no lock on the chain's head,
/// and a row written whole costs less than one written and then sealed); on PostgreSQL the writer
/// seals them before the group commits (see `audit_chain`).
pub(super) fn insert_events_in(tx: &mut dyn Sql, events: &[AuditEvent]) -> Result<(), StoreError> {
    if tx.dialect() == Dialect::Sqlite {
        return insert_chained(tx, events);
    }
    // Many rows per statement (each statement is a round trip), in a few fixed sizes: the
    // connection's statement cache prepares each text once.
    for chunk in chunked(events) {
        let values = placeholders(chunk.len(), 5, |_, n| format!("?{n}"));
        let args: Vec<Value> = chunk
            .iter()
            .flat_map(|e| {
                [
                    e.id.to_value(),
                    e.event.to_value(),
                    e.organization_id.to_value(),
                    e.data_json.to_value(),
                    e.created_at.to_value(),
                ]
            })
            .collect();
        tx.execute(
            &format!("INSERT INTO audit_events (id, event, organization_id, data_json, created_at) VALUES {values}"),
            &args,
        )?;
    }
    Ok(())
}

impl Store {
    /// Inserts events through the object writer, as a write's own events are (tests write
    /// events this way; the audit writer makes them durable with `append_audit_events`).
    pub async fn insert_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.run(move |tx| insert_events_in(tx, &events)).await
    }

    /// Oldest first; `after` is the id of the last event of the previous page.
    pub async fn list_events(
        &self,
        query: EventQuery,
    ) -> Result<(Vec<AuditEvent>, bool), StoreError> {
        self.read(move |c| {
            let mut sql = String::from("SELECT id, event, organization_id, data_json, created_at FROM audit_events WHERE 1 = 1");
            let mut args: Vec<Value> = Vec::new();
            if !query.events.is_empty() {
                let placeholders: Vec<String> = (1..=query.events.len()).map(|i| format!("?{i}")).collect();
                sql.push_str(&format!(" AND event IN ({})", placeholders.join(", ")));
                args.extend(query.events.into_iter().map(Value::Text));
            }
            // Each clause takes its value as the next numbered parameter (`{}`).
            let filters = [
                (" AND organization_id = ?{}", query.organization_id),
                (" AND created_at >= ?{}", query.range_start),
                (" AND created_at < ?{}", query.range_end),
            ];
            for (clause, value) in filters {
                if let Some(value) = value {
                    args.push(Value::Text(value));
                    sql.push_str(&clause.replace("{}", &args.len().to_string()));
                }
            }
            // A cursor to an event that is gone (purged) or never was: continuing from the
            // oldest event would hand the consumer everything again.
            if let Some(after) = query.after {
                let seq: i64 = c
                    .query_opt("SELECT seq FROM audit_events WHERE id = ?1", args![after])?
                    .ok_or(StoreError::UnknownCursor)?
                    .get(0)?;
                args.push(Value::Integer(seq));
                sql.push_str(&format!(" AND seq > ?{}", args.len()));
            }
            // Bound, not spliced: one statement text per filter combination, whatever the
            // limit (each text is a prepared statement kept per PostgreSQL connection).
            args.push((query.limit as u64 + 1).to_value());
            sql.push_str(&format!(" ORDER BY seq ASC LIMIT ?{}", args.len()));
            let mut page = c
                .query(&sql, &args)?
                .iter()
                .map(|r| {
                    Ok(AuditEvent { id: r.get(0)?, event: r.get(1)?, organization_id: r.get(2)?, data_json: r.get(3)?, created_at: r.get(4)? })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            Ok((page, more))
        })
        .await
    }
}
