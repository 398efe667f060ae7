//! The segment log alone: order across segments and reopenings, a torn tail cut off, damage among
//! acknowledged events refused, offsets never reused, one process at a time.

use std::io::Write;

use super::*;

fn dir() -> PathBuf {
    std::env::temp_dir().join(format!("byok-audit-log-{}", uuid::Uuid::new_v4().simple()))
}

fn events(from: usize, count: usize) -> Vec<AuditEvent> {
    (from..from + count)
        .map(|n| AuditEvent {
            id: format!("event_{n}"),
            event: "vault.data.read".into(),
            organization_id: Some("org_log".into()),
            data_json: format!(r#"{{"n":{n}}}"#),
            created_at: "2026-11-29T00:00:00.000000Z".into(),
        })
        .collect()
}

fn ids(events: &[AuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// Every event from `from` to the end, in pages of 7 (pages end inside segments and at their ends).
fn read_all(dir: &Path, from: u64, end: u64) -> Vec<AuditEvent> {
    let mut all = Vec::new();
    let mut offset = from;
    loop {
        let (page, next) = read_from(dir, offset, end, 7).unwrap();
        if page.is_empty() {
            assert_eq!(next, end.max(offset), "an empty page ends at the log's end");
            return all;
        }
        all.extend(page);
        offset = next;
    }
}

/// A log of six batches of four events in segments of 512 bytes (a segment per batch), still
/// open: tests drop it to reopen the directory.
fn six_batches_in_small_segments() -> (PathBuf, SegmentLog) {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    log.segment_bytes = 512;
    for batch in 0..6 {
        log.append(&events(batch * 4, 4)).unwrap();
    }
    (dir, log)
}

#[test]
fn events_read_back_in_order_across_segments_and_reopenings() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    log.segment_bytes = 1024;
    let mut end = 0;
    for batch in 0..20 {
        end = log.append(&events(batch * 5, 5)).unwrap();
    }
    assert!(segments(&dir).unwrap().len() > 5, "the log rolled over");
    drop(log);
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    assert_eq!(log.end(), end, "reopened where it ended");
    let end = log.append(&events(100, 3)).unwrap();
    let read = read_all(&dir, 0, end);
    assert_eq!(ids(&read), ids(&events(0, 103)));
    assert_eq!(read[0].data_json, r#"{"n":0}"#);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reader_never_reads_past_the_synced_end() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    let first = log.append(&events(0, 4)).unwrap();
    log.append(&events(4, 4)).unwrap();
    assert_eq!(ids(&read_all(&dir, 0, first)), ids(&events(0, 4)));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_torn_tail_is_cut_off_and_appends_continue_after_the_last_whole_record() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    let end = log.append(&events(0, 10)).unwrap();
    drop(log);
    // A crash in the middle of the next batch: half a record reached the file.
    let mut torn = Vec::new();
    encode(&events(10, 1)[0], &mut torn).unwrap();
    let segment = segment_path(&dir, 0);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(file);

    let mut log = SegmentLog::open(&dir, 0).unwrap();
    assert_eq!(log.end(), end, "the torn record is gone");
    let end = log.append(&events(11, 2)).unwrap();
    let read = ids(&read_all(&dir, 0, end));
    assert_eq!(read.len(), 12);
    assert_eq!(read[9], "event_9");
    assert_eq!(read[10], "event_11");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_damaged_record_among_acknowledged_ones_stops_the_open() {
    let (dir, _) = six_batches_in_small_segments();
    let (first, length) = segments(&dir).unwrap()[0];
    // One flipped byte in the middle of the first (closed) segment.
    let path = segment_path(&dir, first);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = (length / 2) as usize;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();

    let error = SegmentLog::open(&dir, 0).err().expect("refused");
    assert!(
        matches!(&error, StoreError::Unavailable(text) if text.contains("already acknowledged")),
        "{error:?}"
    );
    // Once the database has indexed past the damage, it no longer matters.
    let past = segments(&dir).unwrap()[1].0;
    SegmentLog::open(&dir, past).expect("opens once the damage is indexed");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_segment_among_unindexed_ones_stops_the_open() {
    let (dir, _) = six_batches_in_small_segments();
    let found = segments(&dir).unwrap();
    std::fs::remove_file(segment_path(&dir, found[1].0)).unwrap();
    let error = SegmentLog::open(&dir, 0).err().expect("refused");
    assert!(format!("{error}").contains("a missing segment"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_log_behind_the_databases_checkpoint_never_reuses_indexed_offsets() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    let end = log.append(&events(0, 3)).unwrap();
    drop(log);
    // The database indexed further than this (older) copy of the log reaches.
    let checkpoint = end + 10_000;
    let mut log = SegmentLog::open(&dir, checkpoint).unwrap();
    assert!(log.end() > checkpoint);
    let end = log.append(&events(3, 2)).unwrap();
    assert_eq!(
        ids(&read_all(&dir, checkpoint, end)),
        ids(&events(3, 2)),
        "what is appended now is read from the checkpoint on"
    );
    log.remove_indexed(checkpoint).unwrap();
    assert_eq!(segments(&dir).unwrap().len(), 1, "the old copy is gone");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn indexed_segments_are_removed_and_an_empty_segment_left_by_a_crash_is_harmless() {
    let (dir, log) = six_batches_in_small_segments();
    let end = log.end();
    let before = segments(&dir).unwrap().len();
    log.remove_indexed(end).unwrap();
    assert_eq!(segments(&dir).unwrap().len(), 1, "{before} segments before");
    assert_eq!(pending_bytes(&dir, end).unwrap(), 0);
    drop(log);
    // A crash right after creating the next segment's file, before its header.
    File::create(segment_path(&dir, end)).unwrap();
    let mut log = SegmentLog::open(&dir, end).unwrap();
    let new_end = log.append(&events(100, 1)).unwrap();
    assert_eq!(ids(&read_all(&dir, end, new_end)), ids(&events(100, 1)));
    assert!(pending_bytes(&dir, end).unwrap() > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_second_process_cannot_append_to_the_log() {
    let dir = dir();
    let _log = SegmentLog::open(&dir, 0).unwrap();
    let error = SegmentLog::open(&dir, 0).err().expect("refused");
    assert!(format!("{error}").contains("in use"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_field_of_an_event_reads_back_as_written() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    let written = vec![
        AuditEvent {
            id: "event_a".into(),
            event: "vault.byok_key.state_changed".into(),
            organization_id: None,
            data_json: r#"{"reason":"Schlüssel \"deaktiviert\"","n":[1,2]}"#.into(),
            created_at: "2026-11-29T00:00:00.000001Z".into(),
        },
        AuditEvent {
            id: "event_b".into(),
            event: "vault.data.read".into(),
            organization_id: Some(String::new()),
            data_json: "{}".into(),
            created_at: "2026-11-29T00:00:00.000002Z".into(),
        },
    ];
    let end = log.append(&written).unwrap();
    let read = read_all(&dir, 0, end);
    assert_eq!(format!("{read:?}"), format!("{written:?}"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_first_unindexed_segment_stops_the_open() {
    let (dir, _) = six_batches_in_small_segments();
    let first = segments(&dir).unwrap()[0].0;
    std::fs::remove_file(segment_path(&dir, first)).unwrap();
    let error = SegmentLog::open(&dir, 0).err().expect("refused");
    assert!(format!("{error}").contains("a missing segment"), "{error}");
    let error = read_from(&dir, 0, u64::MAX, 10).expect_err("a reader refuses too");
    assert!(format!("{error}").contains("a missing segment"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_damaged_record_followed_by_whole_ones_in_the_last_segment_stops_the_open() {
    let dir = dir();
    let mut log = SegmentLog::open(&dir, 0).unwrap();
    for batch in 0..5 {
        log.append(&events(batch * 4, 4)).unwrap();
    }
    drop(log);
    // A flipped byte in the second record: acknowledged records follow it, so this is not a
    // crash's torn tail, and cutting the segment there would drop them.
    let path = segment_path(&dir, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    let mut first = Vec::new();
    encode(&events(0, 1)[0], &mut first).unwrap();
    let second_payload = MAGIC.len() + first.len() + RECORD_HEADER as usize + 3;
    bytes[second_payload] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let error = SegmentLog::open(&dir, 0).err().expect("refused");
    assert!(
        format!("{error}").contains("already acknowledged"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
