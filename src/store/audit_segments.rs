//! The SQLite broker's audit log: an append-only sequence of segment files beside the database
//! (`broker.db-audit/`), where an event is durable once its batch is written and `fdatasync`ed,
//! one sync per batch and no index to update. The indexer (`audit_index.rs`) then copies events
//! into `audit_events`, chained, in large transactions off the request path, and records how far
//! it got in the same transaction (`audit_log_checkpoint`), so a crash at any point neither loses
//! nor duplicates an event.
//!
//! Offsets are bytes of one continuous log: a segment file is named by the offset of its first
//! byte (20 decimal digits), starts with an 8-byte magic, and holds records of a 4-byte big-endian
//! payload length, the payload's CRC-32 and the payload (the event's fields, length-prefixed). A torn last record
//! (a crash during a write, never acknowledged) is cut off when the log is opened; damage anywhere
//! else stops the start: those events were acknowledged, and losing them silently is not an option.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::audit::AuditEvent;

/// Each segment file's first bytes (and the format's version).
const MAGIC: &[u8; 8] = b"BYOKAUD1";
/// A record's header: payload length and CRC-32, big-endian.
const RECORD_HEADER: u64 = 8;
/// A segment is closed, and a new one begun, once it holds this much.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// No event comes near this; a larger length is damage, not an event.
const MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Keeps other processes (a second broker on the same data directory) from appending.
const LOCK_FILE: &str = "LOCK";

/// The log directory beside a SQLite database file.
pub(super) fn directory_for(database: &Path) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push("-audit");
    database.with_file_name(name)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let text = format!("audit log: {what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StoreError::Full(text)
        }
        _ => StoreError::Unavailable(text),
    }
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The segments in `dir`, by base offset, with their lengths.
fn segments(dir: &Path) -> Result<Vec<(u64, u64)>, StoreError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let length = match entry.metadata() {
            Ok(metadata) => metadata.len(),
            // Removed since the listing (indexed meanwhile, by the broker that holds the log).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("cannot read", &entry.path(), e)),
        };
        found.push((base, length));
    }
    found.sort_unstable();
    Ok(found)
}

/// Makes a file's creation or removal durable.
fn sync_directory(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

/// The bytes of one record: the header, then the event's fields, each a 4-byte big-endian length
/// and its UTF-8 bytes (`organization_id` preceded by one byte, 0 when absent). Binary rather than
/// JSON: `data_json` is JSON already, and quoting it again cost every read a second escape pass.
fn encode(event: &AuditEvent, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let fields = [
        event.id.as_str(),
        event.event.as_str(),
        event.organization_id.as_deref().unwrap_or_default(),
        event.data_json.as_str(),
        event.created_at.as_str(),
    ];
    let size = 1 + fields.iter().map(|field| 4 + field.len()).sum::<usize>();
    let length = u32::try_from(size)
        .ok()
        .filter(|length| *length <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Internal("audit log: an event too large to record".into()))?;
    let start = out.len();
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // the checksum, once the payload is written
    out.push(u8::from(event.organization_id.is_some()));
    for field in fields {
        // Each field is shorter than the whole payload, which fits in a u32.
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    let crc = crc32fast::hash(&out[start + RECORD_HEADER as usize..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// The event a record's payload holds (`None` if it does not hold one).
fn decode(payload: &[u8]) -> Option<AuditEvent> {
    let (&has_organization, mut rest) = payload.split_first()?;
    let mut field = || -> Option<String> {
        let (length, tail) = rest.split_first_chunk::<4>()?;
        let length = u32::from_be_bytes(*length) as usize;
        if tail.len() < length {
            return None;
        }
        let (text, tail) = tail.split_at(length);
        rest = tail;
        String::from_utf8(text.to_vec()).ok()
    };
    let event = AuditEvent {
        id: field()?,
        event: field()?,
        organization_id: Some(field()?).filter(|_| has_organization == 1),
        data_json: field()?,
        created_at: field()?,
    };
    rest.is_empty().then_some(event)
}

/// Reads the record at the reader's position: `None` at a clean end of the data, `Err` with the
/// reason for a record that is incomplete or damaged.
fn read_record(reader: &mut impl Read) -> Result<Option<(AuditEvent, u64)>, String> {
    let mut header = [0u8; RECORD_HEADER as usize];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err("a record header cut short".into()),
            Ok(n) => filled += n,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if length > MAX_PAYLOAD {
        return Err(format!("a record length of {length} bytes"));
    }
    let mut payload = vec![0u8; length as usize];
    reader
        .read_exact(&mut payload)
        .map_err(|_| "a record cut short".to_owned())?;
    if crc32fast::hash(&payload) != crc {
        return Err("a record whose checksum does not match".into());
    }
    let event = decode(&payload).ok_or_else(|| "a record that is not an audit event".to_owned())?;
    Ok(Some((event, RECORD_HEADER + u64::from(length))))
}

/// Checks a segment's records from `start` (a record boundary) to its end; the offset within the
/// file where its valid records end, and why the rest is not valid (if it is not).
fn valid_prefix(path: &Path, start: u64) -> Result<(u64, Option<String>), StoreError> {
    let mut file = File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut magic = [0u8; 8];
    if file.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok((0, Some("no segment header".into())));
    }
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io("cannot read", path, e))?;
    let mut reader = BufReader::new(file);
    let mut end = start;
    loop {
        match read_record(&mut reader) {
            Ok(Some((_, length))) => end += length,
            Ok(None) => return Ok((end, None)),
            Err(why) => return Ok((end, Some(why))),
        }
    }
}

/// Whether a whole record starts anywhere in the segment after `from` (where its valid records
/// end). A crash tears only the batch being written, and nothing was appended after it, so a
/// whole record past the tear means damage among records written, synced and acknowledged.
/// Every offset is tried: a cheap length check first, the checksum only for a plausible length.
fn whole_record_after(path: &Path, from: u64) -> Result<bool, StoreError> {
    /// The smallest payload: the organization flag and five empty fields' lengths.
    const MIN_PAYLOAD: usize = 1 + 5 * 4;
    /// Events are small; a larger length found while scanning is not looked at (a torn tail
    /// holding one whole event this large would go unnoticed, and is cut off as before).
    const MAX_SCANNED: usize = 1024 * 1024;
    let bytes = std::fs::read(path).map_err(|e| io("cannot read", path, e))?;
    let header = RECORD_HEADER as usize;
    let start = usize::try_from(from)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    for at in start..bytes.len().saturating_sub(header + MIN_PAYLOAD - 1) {
        let length =
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let end = at + header + length;
        if !(MIN_PAYLOAD..=MAX_SCANNED).contains(&length) || end > bytes.len() {
            continue;
        }
        let crc = u32::from_be_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let payload = &bytes[at + header..end];
        if crc32fast::hash(payload) == crc && decode(payload).is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The open log: where the next batch goes.
pub(super) struct SegmentLog {
    dir: PathBuf,
    /// Held for the log's lifetime: the OS releases the lock when the process ends.
    _lock: File,
    current: File,
    current_base: u64,
    current_length: u64,
    /// When a new segment begins: `SEGMENT_BYTES` (tests make it small).
    segment_bytes: u64,
    /// A failed write could not be cut back off: later records would follow bytes that are no
    /// record, so nothing more is appended until the log is opened again (which cuts them off).
    broken: bool,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, recovering it: segments wholly before `indexed_through`
    /// are removed, a torn last record is cut off, and appends continue at or after
    /// `indexed_through` (a log restored from an older copy must not reuse offsets the database
    /// already counts as indexed). Fails when another process holds the log, or when a record an
    /// earlier run acknowledged is damaged or missing.
    pub fn open(dir: &Path, indexed_through: u64) -> Result<Self, StoreError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
            // The directory's own entry must survive a power loss, or a restart would find no
            // log and start a fresh one over acknowledged events.
            if let Some(parent) = dir.parent() {
                sync_directory(parent)?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "audit log: {} is in use by another broker process (one process per data directory)",
                dir.display()
            ))
        })?;
        let mut found = segments(dir)?;
        // Wholly indexed: their events are in the database.
        while let Some(&(base, length)) = found.first()
            && base + length <= indexed_through
            && found.len() > 1
        {
            remove(dir, base)?;
            found.remove(0);
        }
        // A new segment starts at the checkpoint at the latest, so the first one left cannot start
        // past it unless segments holding unindexed events are gone.
        if let Some(&(first, _)) = found.first()
            && first > indexed_through
        {
            return Err(damaged(dir, indexed_through, "a missing segment"));
        }
        let mut expected = None;
        let last = found.len().saturating_sub(1);
        for index in 0..found.len() {
            let (base, length) = found[index];
            if let Some(expected) = expected
                && base != expected
                && expected > indexed_through
            {
                return Err(damaged(dir, expected, "a missing segment"));
            }
            expected = Some(base + length);
            let start = indexed_through.saturating_sub(base).max(MAGIC.len() as u64);
            // Wholly indexed; the last is checked still: appends continue in it.
            if base + length <= indexed_through && index != last {
                continue;
            }
            let path = segment_path(dir, base);
            let (valid, damage) = valid_prefix(&path, start)?;
            let Some(why) = damage else { continue };
            // Damage in a closed segment, or followed by whole records in the last one, is among
            // acknowledged events; only a tail with no whole record after it is a torn write.
            if index != last || whole_record_after(&path, valid)? {
                return Err(damaged(dir, base + valid, &why));
            }
            // The last segment's tail: a batch whose write the crash cut short, never
            // acknowledged (acknowledgements follow the sync of the whole batch).
            tracing::warn!(
                segment = %path.display(),
                kept = valid,
                dropped = length - valid.min(length),
                reason = %why,
                "audit log: cutting off a torn tail left by a crash (never acknowledged)"
            );
            if valid < MAGIC.len() as u64 {
                // Created, never written: nothing in it was acknowledged.
                remove(dir, base)?;
                found.pop();
                break;
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io("cannot open", &path, e))?;
            file.set_len(valid)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot truncate", &path, e))?;
            found[index].1 = valid;
        }
        let end = found.last().map_or(0, |(base, length)| base + length);
        let (current, current_base, current_length) = match found.last() {
            Some(&(base, length)) if end >= indexed_through => {
                let path = segment_path(dir, base);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| io("cannot open", &path, e))?;
                (file, base, length)
            }
            // None yet, or a log older than the database's checkpoint: a fresh segment past both.
            _ => {
                let base = end.max(indexed_through);
                let file = create_segment(dir, base)?;
                (file, base, MAGIC.len() as u64)
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            current,
            current_base,
            current_length,
            segment_bytes: SEGMENT_BYTES,
            broken: false,
        })
    }

    /// The offset just past the last record written.
    pub fn end(&self) -> u64 {
        self.current_base + self.current_length
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `events` and syncs them to disk; the log's new end. On failure nothing counts as
    /// written: the segment is cut back to where the batch began.
    pub fn append(&mut self, events: &[AuditEvent]) -> Result<u64, StoreError> {
        if self.broken {
            return Err(StoreError::Unavailable(
                "audit log: a failed write could not be undone; restart the broker".into(),
            ));
        }
        if self.current_length >= self.segment_bytes {
            let base = self.end();
            self.current = create_segment(&self.dir, base)?;
            self.current_base = base;
            self.current_length = MAGIC.len() as u64;
        }
        let mut bytes = Vec::with_capacity(events.len() * 512);
        for event in events {
            encode(event, &mut bytes)?;
        }
        let path = segment_path(&self.dir, self.current_base);
        let written = self
            .current
            .write_all(&bytes)
            .and_then(|()| self.current.sync_data());
        if let Err(e) = written {
            // Whatever part reached the file must not be read as acknowledged later.
            if self.current.set_len(self.current_length).is_err() {
                self.broken = true;
            }
            return Err(io("cannot write", &path, e));
        }
        self.current_length += bytes.len() as u64;
        Ok(self.end())
    }

    /// Removes the segments whose every event lies before `indexed_through`, except the one
    /// being appended to.
    pub fn remove_indexed(&self, indexed_through: u64) -> Result<(), StoreError> {
        for (base, length) in segments(&self.dir)? {
            if base != self.current_base && base + length <= indexed_through {
                remove(&self.dir, base)?;
            }
        }
        Ok(())
    }
}

fn damaged(dir: &Path, offset: u64, why: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "audit log: {} holds {why} at offset {offset}, among events already acknowledged; the \
         broker will not start and lose them silently (see docs/ARCHITECTURE.md, \"Audit trail\")",
        dir.display()
    ))
}

fn create_segment(dir: &Path, base: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, base);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| io("cannot create", &path, e))?;
    file.write_all(MAGIC)
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cannot write", &path, e))?;
    sync_directory(dir)?;
    Ok(file)
}

fn remove(dir: &Path, base: u64) -> Result<(), StoreError> {
    let path = segment_path(dir, base);
    std::fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))
}

/// Reads up to `max_events` events from `from` (a record boundary at or after the first record),
/// never past `end` (the appender's last synced offset); the events and the offset after them.
pub(super) fn read_from(
    dir: &Path,
    from: u64,
    end: u64,
    max_events: usize,
) -> Result<(Vec<AuditEvent>, u64), StoreError> {
    let mut events = Vec::new();
    let mut offset = from;
    for (base, length) in segments(dir)? {
        if base + length <= offset || base >= end {
            continue;
        }
        if base > offset {
            return Err(damaged(dir, offset, "a missing segment"));
        }
        let path = segment_path(dir, base);
        let mut file = File::open(&path).map_err(|e| io("cannot open", &path, e))?;
        // A reader positioned exactly at a segment's start skips its magic.
        offset = offset.max(base + MAGIC.len() as u64);
        file.seek(SeekFrom::Start(offset - base))
            .map_err(|e| io("cannot read", &path, e))?;
        let stop = end.min(base + length);
        if offset >= stop {
            break;
        }
        let mut reader = BufReader::new(file).take(stop - offset);
        while events.len() < max_events {
            match read_record(&mut reader) {
                Ok(Some((event, size))) => {
                    events.push(event);
                    offset += size;
                }
                Ok(None) => break,
                Err(why) => return Err(damaged(dir, offset, &why)),
            }
        }
        if events.len() >= max_events || offset >= end {
            break;
        }
    }
    Ok((events, offset))
}

/// Bytes of events in `dir` past `indexed_through`, read from the segment files alone (for a
/// process that does not hold the log, such as `audit verify`).
pub(super) fn pending_bytes(dir: &Path, indexed_through: u64) -> Result<u64, StoreError> {
    if !dir.exists() {
        return Ok(0);
    }
    Ok(segments(dir)?
        .iter()
        .map(|(base, length)| {
            let start = indexed_through.max(base + MAGIC.len() as u64);
            (base + length).saturating_sub(start)
        })
        .sum())
}

#[cfg(test)]
#[path = "audit_segments_tests.rs"]
mod tests;
