//! The audit hash chain (docs/ARCHITECTURE.md, "Audit trail"): one chain per organization (and
//! one for events without organization), each event linked to its predecessor by a SHA-256 over a
//! canonical encoding of its fields, its position and the previous hash.
//!
//! On PostgreSQL, events are inserted unchained, wherever they are written (the audit writer, or a
//! data write's own transaction), and the writer seals them just before its group commits, in the
//! same transaction: every committed event is chained. (SQLite's one writer chains them as it
//! inserts them; the seal then finds nothing left.) Sealing last is what keeps several PostgreSQL
//! instances from deadlocking: a group takes its chain heads' row locks (in chain order) only
//! after every other lock it will hold, and waits for nothing but its commit while holding them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::audit::AuditEvent;
use super::sql::{Dialect, Row, Sql, ToValue, Value, args};
use super::writer::GroupHook;
use super::{Store, StoreError};

/// The previous hash of every chain's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Names the encoding, so a later one can never produce the same hash for other fields.
const ENCODING: &[u8] = b"byok-broker audit chain v1";

/// The chain an event belongs to: its organization's, or the broker's own for events without.
pub fn chain_of(organization_id: Option<&str>) -> String {
    match organization_id {
        Some(organization) => format!("organization:{organization}"),
        None => "broker".to_owned(),
    }
}

/// The organization whose events a chain holds (`None`: the broker's chain); `None` also for a
/// name that is no chain's.
pub fn organization_of(chain: &str) -> Option<Option<&str>> {
    match chain {
        "broker" => Some(None),
        _ => chain.strip_prefix("organization:").map(Some),
    }
}

/// The fields an event's hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct ChainedFields<'a> {
    pub id: &'a str,
    pub event: &'a str,
    pub organization_id: Option<&'a str>,
    pub data_json: &'a str,
    pub created_at: &'a str,
    pub position: i64,
    pub previous_hash: &'a str,
}

/// Lowercase hex SHA-256 of: the encoding's name, then each field as an 8-byte big-endian length
/// and its UTF-8 bytes (`organization_id` as one byte 0 when absent, else 1 and the field), the
/// position as 8 bytes big-endian, and the previous hash's hex text as a field.
pub fn event_hash(fields: &ChainedFields<'_>) -> String {
    let mut hash = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    field(ENCODING);
    field(fields.id.as_bytes());
    field(fields.event.as_bytes());
    match fields.organization_id {
        None => field(&[0]),
        Some(organization) => {
            field(&[1]);
            field(organization.as_bytes());
        }
    }
    field(fields.data_json.as_bytes());
    field(fields.created_at.as_bytes());
    field(&fields.position.to_be_bytes());
    field(fields.previous_hash.as_bytes());
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Seals each group's events: notes where the audit table ends when the group begins, and
/// before it commits chains every unchained event past that point (only this group's can be
/// there: every committed event is sealed already).
#[derive(Default)]
pub(super) struct ChainSealer {
    /// The highest `seq` when the group began.
    watermark: i64,
}

impl GroupHook for ChainSealer {
    fn begin(&mut self, sql: &mut dyn Sql) -> Result<(), StoreError> {
        self.watermark = sql
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM audit_events", &[])?
            .get(0)?;
        Ok(())
    }

    fn before_commit(&mut self, sql: &mut dyn Sql) -> Result<(), StoreError> {
        let rows = sql.query(
            "SELECT seq, id, event, organization_id, data_json, created_at FROM audit_events \
             WHERE seq > ?1 AND chain_hash IS NULL ORDER BY seq",
            args![self.watermark],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        // Chain order: every group locks the heads it needs in the same order.
        let mut chains: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for row in rows {
            let organization: Option<String> = row.get(3)?;
            chains
                .entry(chain_of(organization.as_deref()))
                .or_default()
                .push(row);
        }
        for (chain, rows) in chains {
            seal_chain(sql, &chain, &rows)?;
        }
        Ok(())
    }
}

/// Inserts `events` already chained, in order, moving each chain's head: SQLite's one writer
/// (events of writes, and the audit log's indexer) and PostgreSQL's audit connection (locking each
/// head, in chain order, until its transaction commits). Many rows per statement: on PostgreSQL
/// each statement is a round trip.
pub(super) fn insert_chained(sql: &mut dyn Sql, events: &[AuditEvent]) -> Result<(), StoreError> {
    let mut chains: BTreeMap<String, Vec<&AuditEvent>> = BTreeMap::new();
    for event in events {
        chains
            .entry(chain_of(event.organization_id.as_deref()))
            .or_default()
            .push(event);
    }
    for (chain, events) in chains {
        let (mut position, mut previous) = lock_head(sql, &chain)?;
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            position += 1;
            let hash = event_hash(&ChainedFields {
                id: &e.id,
                event: &e.event,
                organization_id: e.organization_id.as_deref(),
                data_json: &e.data_json,
                created_at: &e.created_at,
                position,
                previous_hash: &previous,
            });
            rows.push((
                e,
                position,
                std::mem::replace(&mut previous, hash.clone()),
                hash,
            ));
        }
        for chunk in chunked(&rows) {
            let values = placeholders(chunk.len(), 8, |_, n| format!("?{n}"));
            let args: Vec<Value> = chunk
                .iter()
                .flat_map(|(e, position, previous, hash)| {
                    [
                        e.id.to_value(),
                        e.event.to_value(),
                        e.organization_id.to_value(),
                        e.data_json.to_value(),
                        e.created_at.to_value(),
                        position.to_value(),
                        previous.to_value(),
                        hash.to_value(),
                    ]
                })
                .collect();
            sql.execute(
                &format!(
                    "INSERT INTO audit_events (id, event, organization_id, data_json, created_at, chain_position, chain_previous, chain_hash) VALUES {values}"
                ),
                &args,
            )?;
        }
        move_head(sql, &chain, position, &previous)?;
    }
    Ok(())
}

fn move_head(sql: &mut dyn Sql, chain: &str, position: i64, hash: &str) -> Result<(), StoreError> {
    sql.execute(
        "UPDATE audit_chain_heads SET position = ?1, hash = ?2 WHERE chain = ?3",
        args![position, hash, chain],
    )?;
    Ok(())
}

/// Appends `rows` (in commit order) to `chain`, moving its head.
fn seal_chain(sql: &mut dyn Sql, chain: &str, rows: &[Row]) -> Result<(), StoreError> {
    let (mut position, mut previous) = lock_head(sql, chain)?;
    // (seq, position, previous hash, hash) of each row.
    let mut links = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.get(0)?;
        let id: String = row.get(1)?;
        let event: String = row.get(2)?;
        let organization_id: Option<String> = row.get(3)?;
        let data_json: String = row.get(4)?;
        let created_at: String = row.get(5)?;
        position += 1;
        let hash = event_hash(&ChainedFields {
            id: &id,
            event: &event,
            organization_id: organization_id.as_deref(),
            data_json: &data_json,
            created_at: &created_at,
            position,
            previous_hash: &previous,
        });
        links.push((
            seq,
            position,
            std::mem::replace(&mut previous, hash.clone()),
            hash,
        ));
    }
    match sql.dialect() {
        // Many rows per statement: on PostgreSQL each statement is a round trip.
        Dialect::Postgres => {
            for chunk in chunked(&links) {
                let values = placeholders(chunk.len(), 4, |column, n| match column {
                    0 | 1 => format!("CAST(?{n} AS BIGINT)"),
                    _ => format!("CAST(?{n} AS TEXT)"),
                });
                let args: Vec<Value> = chunk
                    .iter()
                    .flat_map(|(seq, position, previous, hash)| {
                        [
                            seq.to_value(),
                            position.to_value(),
                            previous.to_value(),
                            hash.to_value(),
                        ]
                    })
                    .collect();
                sql.execute(
                    &format!(
                        "UPDATE audit_events AS e SET chain_position = v.position, chain_previous = v.previous, chain_hash = v.hash \
                         FROM (VALUES {values}) AS v(seq, position, previous, hash) WHERE e.seq = v.seq"
                    ),
                    &args,
                )?;
            }
        }
        Dialect::Sqlite => {
            for (seq, position, previous, hash) in &links {
                sql.execute(
                    "UPDATE audit_events SET chain_position = ?1, chain_previous = ?2, chain_hash = ?3 WHERE seq = ?4",
                    args![position, previous, hash, seq],
                )?;
            }
        }
    }
    move_head(sql, chain, position, &previous)
}

/// Rows per multi-row statement, largest first: a batch is cut into these sizes, so a connection
/// prepares (and caches) at most one statement text per size.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// `items` cut into chunks of the sizes in `CHUNKS`, largest first.
pub(super) fn chunked<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = CHUNKS.iter().copied().find(|size| *size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// `(p, p), (p, p)`: `rows` tuples of `columns` placeholders numbered from 1, each written by
/// `placeholder(column, number)`.
pub(super) fn placeholders(
    rows: usize,
    columns: usize,
    placeholder: impl Fn(usize, usize) -> String,
) -> String {
    (0..rows)
        .map(|row| {
            let tuple: Vec<String> = (0..columns)
                .map(|column| placeholder(column, row * columns + column + 1))
                .collect();
            format!("({})", tuple.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The chain's head (position and hash of its last event), locked until the commit on
/// PostgreSQL (SQLite's one writer needs no lock); created at the genesis for a new chain.
fn lock_head(sql: &mut dyn Sql, chain: &str) -> Result<(i64, String), StoreError> {
    let select = match sql.dialect() {
        Dialect::Sqlite => "SELECT position, hash FROM audit_chain_heads WHERE chain = ?1",
        Dialect::Postgres => {
            "SELECT position, hash FROM audit_chain_heads WHERE chain = ?1 FOR UPDATE"
        }
    };
    if let Some(head) = sql.query_opt(select, args![chain])? {
        return Ok((head.get(0)?, head.get(1)?));
    }
    // Another instance may be creating it too: its insert wins, then the lock waits for it.
    sql.execute(
        "INSERT INTO audit_chain_heads (chain, position, hash) VALUES (?1, 0, ?2) ON CONFLICT (chain) DO NOTHING",
        args![chain, GENESIS_HASH],
    )?;
    let head = sql.query_one(select, args![chain])?;
    Ok((head.get(0)?, head.get(1)?))
}

/// Inside a purge's transaction: deletes the events `seqs` names, recording first, per chain, the
/// last position they remove and its hash, so a verifier starts the chain there instead of
/// reporting the purged events as deleted. Insert-only: a purge never waits for a head's lock.
/// How many events it deleted.
pub(super) fn purge_events(sql: &mut dyn Sql, seqs: &[i64]) -> Result<u64, StoreError> {
    let mut last: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut removed = 0;
    for seq in seqs {
        let row = sql.query_opt(
            "DELETE FROM audit_events WHERE seq = ?1 RETURNING organization_id, chain_position, chain_hash",
            args![seq],
        )?;
        let Some(row) = row else { continue };
        removed += 1;
        let organization: Option<String> = row.get(0)?;
        let (Some(position), Some(hash)) = (row.get::<Option<i64>>(1)?, row.get(2)?) else {
            continue; // unchained (written before the chain began)
        };
        let chain = chain_of(organization.as_deref());
        if last.get(&chain).is_none_or(|(kept, _)| position > *kept) {
            last.insert(chain, (position, hash));
        }
    }
    for (chain, (position, hash)) in last {
        sql.execute(
            "INSERT INTO audit_chain_purges (chain, position, hash) VALUES (?1, ?2, ?3) ON CONFLICT (chain, position) DO NOTHING",
            args![chain, position, hash],
        )?;
    }
    Ok(removed)
}

/// An event as stored, with its chain fields (`None` when written before chaining began).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: String,
    pub event: String,
    pub organization_id: Option<String>,
    pub data_json: String,
    pub created_at: String,
    pub chain: Option<ChainLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub position: i64,
    pub previous_hash: String,
    pub hash: String,
}

impl StoredEvent {
    /// The fields its hash covers, at `position` (not necessarily the stored one).
    pub fn fields_at<'a>(&'a self, position: i64, previous_hash: &'a str) -> ChainedFields<'a> {
        ChainedFields {
            id: &self.id,
            event: &self.event,
            organization_id: self.organization_id.as_deref(),
            data_json: &self.data_json,
            created_at: &self.created_at,
            position,
            previous_hash,
        }
    }
}

const STORED_EVENT_COLUMNS: &str = "seq, id, event, organization_id, data_json, created_at, chain_position, chain_previous, chain_hash";

fn stored_event(row: &Row) -> Result<StoredEvent, StoreError> {
    let chain = match (row.get(6)?, row.get(7)?, row.get(8)?) {
        (Some(position), Some(previous_hash), Some(hash)) => Some(ChainLink {
            position,
            previous_hash,
            hash,
        }),
        _ => None,
    };
    Ok(StoredEvent {
        seq: row.get(0)?,
        id: row.get(1)?,
        event: row.get(2)?,
        organization_id: row.get(3)?,
        data_json: row.get(4)?,
        created_at: row.get(5)?,
        chain,
    })
}

/// `chain`'s organization (bound as `?1`) and the condition selecting its events by it.
fn chain_filter(chain: &str) -> Result<(Option<String>, &'static str), StoreError> {
    let organization = organization_of(chain)
        .ok_or_else(|| StoreError::Internal(format!("no chain is named {chain:?}")))?;
    Ok(match organization {
        Some(organization) => (Some(organization.to_owned()), "organization_id = ?1"),
        None => (None, "organization_id IS NULL AND CAST(?1 AS TEXT) IS NULL"),
    })
}

/// A chain as its head and purge records describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    /// Position and hash of its last event; `None` when no head record exists.
    pub head: Option<(i64, String)>,
    /// Position and hash of the last event retention purged (`(0, genesis)` when none).
    pub purged_through: (i64, String),
}

/// Which events an export returns, oldest (lowest `seq`) first.
#[derive(Debug, Clone, Default)]
pub struct ExportQuery {
    pub organization_id: Option<String>,
    pub range_start: Option<String>,
    pub range_end: Option<String>,
}

impl Store {
    /// Every chain: those with a head record, and those that only events name.
    pub async fn audit_chains(&self) -> Result<Vec<ChainHead>, StoreError> {
        self.read(|c| {
            let mut chains: BTreeMap<String, ChainHead> = BTreeMap::new();
            let new = |chain: &str| ChainHead {
                chain: chain.to_owned(),
                head: None,
                purged_through: (0, GENESIS_HASH.to_owned()),
            };
            for row in c.query("SELECT chain, position, hash FROM audit_chain_heads", &[])? {
                let chain: String = row.get(0)?;
                chains.entry(chain.clone()).or_insert_with(|| new(&chain)).head =
                    Some((row.get(1)?, row.get(2)?));
            }
            for row in c.query(
                "SELECT DISTINCT organization_id FROM audit_events WHERE chain_position IS NOT NULL",
                &[],
            )? {
                let organization: Option<String> = row.get(0)?;
                let chain = chain_of(organization.as_deref());
                chains.entry(chain.clone()).or_insert_with(|| new(&chain));
            }
            for row in c.query(
                "SELECT p.chain, p.position, p.hash FROM audit_chain_purges p WHERE p.position = \
                 (SELECT MAX(q.position) FROM audit_chain_purges q WHERE q.chain = p.chain)",
                &[],
            )? {
                let chain: String = row.get(0)?;
                chains
                    .entry(chain.clone())
                    .or_insert_with(|| new(&chain))
                    .purged_through = (row.get(1)?, row.get(2)?);
            }
            Ok(chains.into_values().collect())
        })
        .await
    }

    /// Up to `limit` events of `chain` after (`position`, `seq`), in chain order (ties, which
    /// only tampering makes, by `seq`).
    pub async fn chain_events(
        &self,
        chain: &str,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (organization, same_chain) = chain_filter(chain)?;
        self.read(move |c| {
            let sql = format!(
                "SELECT {STORED_EVENT_COLUMNS} FROM audit_events WHERE {same_chain} \
                 AND chain_position IS NOT NULL \
                 AND (chain_position > ?2 OR (chain_position = ?2 AND seq > ?3)) \
                 ORDER BY chain_position, seq LIMIT ?4"
            );
            c.query(&sql, args![organization, after.0, after.1, limit as u64])?
                .iter()
                .map(stored_event)
                .collect()
        })
        .await
    }

    /// The first event of `chain` at or after `since` and the last before `until`, as chain
    /// positions (`None` when the chain has no event in that time).
    pub async fn chain_positions_between(
        &self,
        chain: &str,
        since: Option<String>,
        until: Option<String>,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let (organization, same_chain) = chain_filter(chain)?;
        self.read(move |c| {
            let sql = format!(
                "SELECT MIN(chain_position), MAX(chain_position) FROM audit_events WHERE {same_chain} \
                 AND chain_position IS NOT NULL AND (CAST(?2 AS TEXT) IS NULL OR created_at >= ?2) AND (CAST(?3 AS TEXT) IS NULL OR created_at < ?3)"
            );
            let row = c.query_one(&sql, args![organization, since, until])?;
            Ok(match (row.get(0)?, row.get(1)?) {
                (Some(first), Some(last)) => Some((first, last)),
                _ => None,
            })
        })
        .await
    }

    /// The first event written after chaining began that carries no chain position: an event
    /// the broker did not write (or one whose chain fields were erased).
    pub async fn first_unchained_event(&self) -> Result<Option<StoredEvent>, StoreError> {
        self.read(|c| {
            let sql = format!(
                "SELECT {STORED_EVENT_COLUMNS} FROM audit_events WHERE chain_hash IS NULL \
                 AND seq > (SELECT unchained_through FROM audit_chain_genesis WHERE id = 1) \
                 ORDER BY seq LIMIT 1"
            );
            c.query(&sql, &[])?.first().map(stored_event).transpose()
        })
        .await
    }

    /// Up to `limit` events matching `query` with `seq` above `after_seq`, by `seq`: an export
    /// pages through the table with this, holding one page at a time.
    pub async fn export_events(
        &self,
        query: ExportQuery,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |c| {
            let sql = format!(
                "SELECT {STORED_EVENT_COLUMNS} FROM audit_events WHERE seq > ?1 \
                 AND (CAST(?2 AS TEXT) IS NULL OR organization_id = ?2) \
                 AND (CAST(?3 AS TEXT) IS NULL OR created_at >= ?3) \
                 AND (CAST(?4 AS TEXT) IS NULL OR created_at < ?4) \
                 ORDER BY seq LIMIT ?5"
            );
            c.query(
                &sql,
                args![
                    after_seq,
                    query.organization_id,
                    query.range_start,
                    query.range_end,
                    limit as u64
                ],
            )?
            .iter()
            .map(stored_event)
            .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(position: i64) -> ChainedFields<'static> {
        ChainedFields {
            id: "event_1",
            event: "vault.data.read",
            organization_id: Some("org_1"),
            data_json: "{\"k\":1}",
            created_at: "2026-01-01T00:00:00.000000Z",
            position,
            previous_hash: GENESIS_HASH,
        }
    }

    #[test]
    fn every_hashed_field_changes_the_hash() {
        let base = event_hash(&fields(1));
        assert_eq!(base.len(), 64);
        let variants = [
            ChainedFields {
                id: "event_2",
                ..fields(1)
            },
            ChainedFields {
                event: "vault.data.created",
                ..fields(1)
            },
            ChainedFields {
                organization_id: None,
                ..fields(1)
            },
            ChainedFields {
                organization_id: Some("org_2"),
                ..fields(1)
            },
            ChainedFields {
                data_json: "{\"k\":2}",
                ..fields(1)
            },
            ChainedFields {
                created_at: "2026-01-01T00:00:00.000001Z",
                ..fields(1)
            },
            fields(2),
            ChainedFields {
                previous_hash: "1",
                ..fields(1)
            },
        ];
        for variant in variants {
            assert_ne!(event_hash(&variant), base, "{variant:?}");
        }
    }

    #[test]
    fn field_boundaries_are_part_of_the_encoding() {
        let a = ChainedFields {
            id: "ab",
            event: "c",
            ..fields(1)
        };
        let b = ChainedFields {
            id: "a",
            event: "bc",
            ..fields(1)
        };
        assert_ne!(event_hash(&a), event_hash(&b));
    }

    #[test]
    fn batches_are_cut_into_the_few_statement_sizes() {
        let sizes: Vec<usize> = chunked(&[0; 151]).map(<[i32]>::len).collect();
        assert_eq!(sizes, [64, 64, 16, 4, 1, 1, 1]);
        assert_eq!(chunked::<i32>(&[]).count(), 0);
        assert_eq!(
            placeholders(2, 2, |column, n| format!("{column}:?{n}")),
            "(0:?1, 1:?2), (0:?3, 1:?4)"
        );
    }

    #[test]
    fn chain_names_map_back_to_their_organization() {
        assert_eq!(
            organization_of(&chain_of(Some("org_1"))),
            Some(Some("org_1"))
        );
        assert_eq!(organization_of(&chain_of(None)), Some(None));
        assert_eq!(organization_of("other"), None);
    }
}
