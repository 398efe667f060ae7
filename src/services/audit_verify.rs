//! `byok-broker audit verify`: walks each audit hash chain in position order, a page at a time,
//! recomputing every event's hash and its link to its predecessor, and names the first break of
//! each chain: a modified, deleted, inserted or reordered event. What it can and cannot detect is
//! in docs/ARCHITECTURE.md ("Audit trail").

use std::collections::VecDeque;
use std::fmt;

use crate::error::Error;
use crate::store::{ChainHead, Store, StoredEvent, event_hash};

/// Events read per query.
const PAGE: usize = 1000;

/// What to check; everything by default.
#[derive(Debug, Clone, Default)]
pub struct VerifyRange {
    /// Only this organization's chain (`Some(None)`: only the broker's own chain).
    pub organization: Option<Option<String>>,
    /// Chain positions, inclusive.
    pub from_position: Option<i64>,
    pub to_position: Option<i64>,
    /// Only the part of each chain from its first event created at or after `since` to its last
    /// created before `until` (RFC 3339).
    pub since: Option<String>,
    pub until: Option<String>,
}

impl VerifyRange {
    /// Whether the range reaches each chain's end, so its head record can be compared.
    fn reaches_the_head(&self) -> bool {
        self.to_position.is_none() && self.until.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// An event's fields (or its hash) no longer match what was chained.
    Modified,
    /// Events are missing from the chain (inside it, or at its tail).
    Deleted,
    /// An event that the broker did not chain is present.
    Inserted,
    /// An intact event sits at another position than the one it was chained at.
    Reordered,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Modified => "modified",
            BreakKind::Deleted => "deleted",
            BreakKind::Inserted => "inserted",
            BreakKind::Reordered => "reordered",
        })
    }
}

/// The first break found in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub kind: BreakKind,
    /// The event concerned (for a deletion: the last intact event before the gap, if any).
    pub event_id: Option<String>,
    /// The chain position concerned (for a deletion: the first missing one).
    pub position: Option<i64>,
    pub detail: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(id) = &self.event_id {
            write!(f, " event {id}")?;
        }
        if let Some(position) = self.position {
            write!(f, " at position {position}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Debug, Clone)]
pub struct ChainReport {
    pub chain: String,
    pub checked: u64,
    /// First and last position checked.
    pub positions: Option<(i64, i64)>,
    pub head: Option<(i64, String)>,
    pub broken: Option<Break>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub chains: Vec<ChainReport>,
    /// An event written after chaining began without a chain position.
    pub unchained: Option<Break>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.unchained.is_none() && self.chains.iter().all(|c| c.broken.is_none())
    }

    pub fn checked(&self) -> u64 {
        self.chains.iter().map(|c| c.checked).sum()
    }
}

pub async fn verify(store: &Store, range: &VerifyRange) -> Result<VerifyReport, Error> {
    let mut report = VerifyReport::default();
    for chain in store.audit_chains().await? {
        let organization =
            crate::store::organization_of(&chain.chain).map(|o| o.map(str::to_owned));
        if range.organization.is_some() && organization != range.organization {
            continue;
        }
        report
            .chains
            .push(verify_chain(store, &chain, range).await?);
    }
    if let Some(event) = store.first_unchained_event().await?
        && (range.organization.is_none()
            || range.organization.as_ref() == Some(&event.organization_id))
    {
        report.unchained = Some(Break {
            kind: BreakKind::Inserted,
            event_id: Some(event.id),
            position: None,
            detail: "written after the chain began but carries no chain position".into(),
        });
    }
    Ok(report)
}

async fn verify_chain(
    store: &Store,
    chain: &ChainHead,
    range: &VerifyRange,
) -> Result<ChainReport, Error> {
    let mut report = ChainReport {
        chain: chain.chain.clone(),
        checked: 0,
        positions: None,
        head: chain.head.clone(),
        broken: None,
    };
    let (purged, purged_hash) = &chain.purged_through;
    let mut first = range.from_position.unwrap_or(1).max(purged + 1);
    let mut last = range.to_position.unwrap_or(i64::MAX);
    if range.since.is_some() || range.until.is_some() {
        match store
            .chain_positions_between(&chain.chain, range.since.clone(), range.until.clone())
            .await?
        {
            Some((since, until)) => {
                first = first.max(since);
                last = last.min(until);
            }
            None => return Ok(report),
        }
    }
    let head_position = chain.head.as_ref().map(|(position, _)| *position);
    let mut walk = Walk {
        store,
        chain: &chain.chain,
        after: (first - 1, i64::MAX),
        buffer: VecDeque::new(),
        exhausted: false,
    };
    let mut expected = first;
    // The link into the range: known at the chain's start (or purge point); else the first
    // event's own claim is taken, as its predecessor is outside the range.
    let mut previous: Option<String> = (first == purged + 1).then(|| purged_hash.clone());
    let mut previous_id: Option<String> = None;
    let mut broken = None;
    while let Some(event) = walk.next().await? {
        let Some(link) = event.chain.clone() else {
            continue; // the query returns chained events only
        };
        if link.position > last {
            break;
        }
        if range.reaches_the_head()
            && let Some(head) = head_position
            && link.position > head
        {
            broken = Some(Break {
                kind: BreakKind::Inserted,
                event_id: Some(event.id.clone()),
                position: Some(link.position),
                detail: format!("beyond the chain's head (position {head})"),
            });
            break;
        }
        if link.position < expected {
            broken = Some(Break {
                kind: BreakKind::Inserted,
                event_id: Some(event.id.clone()),
                position: Some(link.position),
                detail: format!(
                    "position {} already holds event {}",
                    link.position,
                    previous_id.as_deref().unwrap_or("?")
                ),
            });
            break;
        }
        if link.position > expected {
            broken = Some(deleted(
                expected,
                link.position - 1,
                previous_id.as_deref(),
                Some(&event.id),
            ));
            break;
        }
        let intact = holds_its_hash(&event, expected);
        let linked = previous.as_ref().is_none_or(|p| *p == link.previous_hash);
        if !(intact && linked) {
            // Two events at one position: the one that verifies is the chained one.
            if let Some(next) = walk.peek().await?
                && next.chain.as_ref().is_some_and(|n| n.position == expected)
                && holds_its_hash(next, expected)
                && next
                    .chain
                    .as_ref()
                    .is_some_and(|n| previous.as_ref().is_none_or(|p| *p == n.previous_hash))
            {
                broken = Some(Break {
                    kind: BreakKind::Inserted,
                    event_id: Some(event.id.clone()),
                    position: Some(expected),
                    detail: format!("position {expected} is chained to event {}", next.id),
                });
            } else if !intact {
                let search_to = head_position.unwrap_or(expected).max(expected) + 1;
                broken = Some(match chained_position(&event, purged + 1, search_to) {
                    Some(original) => Break {
                        kind: BreakKind::Reordered,
                        event_id: Some(event.id.clone()),
                        position: Some(expected),
                        detail: format!("intact, but chained at position {original}"),
                    },
                    None => Break {
                        kind: BreakKind::Modified,
                        event_id: Some(event.id.clone()),
                        position: Some(expected),
                        detail: "its fields no longer match its hash".into(),
                    },
                });
            } else {
                // The event is intact but names another predecessor: the one before it was
                // replaced by a forgery carrying a recomputed hash.
                broken = Some(Break {
                    kind: BreakKind::Modified,
                    event_id: previous_id.clone(),
                    position: Some(expected - 1),
                    detail: format!(
                        "its hash is not the one event {} at position {expected} was chained to",
                        event.id
                    ),
                });
            }
            break;
        }
        report.checked += 1;
        report.positions = Some((report.positions.map_or(expected, |(f, _)| f), expected));
        previous = Some(link.hash);
        previous_id = Some(event.id);
        expected += 1;
    }
    if broken.is_none()
        && range.reaches_the_head()
        && let Some((head, head_hash)) = &chain.head
    {
        if expected - 1 < *head {
            broken = Some(deleted(expected, *head, previous_id.as_deref(), None));
        } else if previous.as_ref().is_some_and(|p| p != head_hash) {
            broken = Some(Break {
                kind: BreakKind::Modified,
                event_id: previous_id.clone(),
                position: Some(*head),
                detail: "its hash is not the one the chain's head records".into(),
            });
        }
    }
    if broken.is_none() && chain.head.is_none() && range.reaches_the_head() {
        broken = Some(Break {
            kind: BreakKind::Deleted,
            event_id: None,
            position: None,
            detail: "the chain's head record is missing".into(),
        });
    }
    report.broken = broken;
    Ok(report)
}

fn deleted(from: i64, to: i64, before: Option<&str>, after: Option<&str>) -> Break {
    let mut detail = if from == to {
        format!("the event at position {from} is missing")
    } else {
        format!("the events at positions {from}-{to} are missing")
    };
    match after {
        Some(next) => detail.push_str(&format!(" (before event {next})")),
        None => detail.push_str(" (the chain's tail: its head records more)"),
    }
    Break {
        kind: BreakKind::Deleted,
        event_id: before.map(str::to_owned),
        position: Some(from),
        detail,
    }
}

/// Whether `event`'s stored hash is the hash of its fields at `position` after its stored
/// previous hash.
fn holds_its_hash(event: &StoredEvent, position: i64) -> bool {
    event.chain.as_ref().is_some_and(|link| {
        event_hash(&event.fields_at(position, &link.previous_hash)) == link.hash
    })
}

/// The position in `from..to` at which `event` hashes to its stored hash: where it was chained,
/// when only its position changed since. Runs once, at a break.
fn chained_position(event: &StoredEvent, from: i64, to: i64) -> Option<i64> {
    (from..to).find(|position| holds_its_hash(event, *position))
}

/// One chain's events in position order, a page at a time.
struct Walk<'a> {
    store: &'a Store,
    chain: &'a str,
    /// (position, seq) of the last event fetched.
    after: (i64, i64),
    buffer: VecDeque<StoredEvent>,
    exhausted: bool,
}

impl Walk<'_> {
    async fn fill(&mut self) -> Result<(), Error> {
        if self.buffer.is_empty() && !self.exhausted {
            let page = self
                .store
                .chain_events(self.chain, self.after, PAGE)
                .await?;
            self.exhausted = page.len() < PAGE;
            if let Some(last) = page.last() {
                self.after = (
                    last.chain.as_ref().map_or(i64::MAX, |l| l.position),
                    last.seq,
                );
            }
            self.buffer.extend(page);
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<StoredEvent>, Error> {
        self.fill().await?;
        Ok(self.buffer.pop_front())
    }

    async fn peek(&mut self) -> Result<Option<&StoredEvent>, Error> {
        self.fill().await?;
        Ok(self.buffer.front())
    }
}
