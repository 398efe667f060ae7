//! List cursors: opaque base64url of a version byte and a list position (created_at, object id),
//! so a cursor keeps its place even after its object is deleted. `decode` is pure and total: any
//! input is a cursor, a plain object id (what the WorkOS docs describe), or an error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::store::ListPosition;
use crate::timestamp::Timestamp;

const VERSION: u8 = 1;
/// Version byte, created_at (microseconds, big-endian i64), object id (16 bytes).
const ENCODED_BYTES: usize = 1 + 8 + 16;
/// 9999-12-31T23:59:59.999999Z: beyond it the stored fixed-width text order breaks down.
const LATEST_MICROS: i64 = 253_402_300_799_999_999;

/// What an `after` / `before` parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// A position from a cursor this broker issued.
    Position(ListPosition),
    /// An object id: its position counts only if the caller may see the object.
    ObjectId(Uuid),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a list cursor or object id")]
pub struct InvalidCursor;

pub fn encode(position: &ListPosition) -> String {
    let mut bytes = [0u8; ENCODED_BYTES];
    bytes[0] = VERSION;
    bytes[1..9].copy_from_slice(&position.created_at.0.to_be_bytes());
    bytes[9..].copy_from_slice(position.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Cursor, InvalidCursor> {
    // Cursors are 34 characters; no UUID form (32, 36, 38 or 45) has that length.
    if let Ok(id) = Uuid::try_parse(text) {
        return Ok(Cursor::ObjectId(id));
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| InvalidCursor)?;
    let bytes: [u8; ENCODED_BYTES] = bytes.try_into().map_err(|_| InvalidCursor)?;
    if bytes[0] != VERSION {
        return Err(InvalidCursor);
    }
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&bytes[1..9]);
    let micros = i64::from_be_bytes(micros);
    if !(0..=LATEST_MICROS).contains(&micros) {
        return Err(InvalidCursor);
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[9..]);
    Ok(Cursor::Position(ListPosition {
        created_at: Timestamp(micros),
        id: Uuid::from_bytes(id),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> ListPosition {
        ListPosition {
            created_at: Timestamp(1_767_225_600_123_456),
            id: Uuid::parse_str("9f0c3c7e-6a51-4d7e-9d5b-2f1a7f7c0b11").unwrap(),
        }
    }

    #[test]
    fn a_cursor_round_trips() {
        let text = encode(&position());
        assert_eq!(text.len(), 34);
        assert_eq!(decode(&text), Ok(Cursor::Position(position())));
    }

    #[test]
    fn an_object_id_is_accepted_as_a_cursor() {
        let id = "9f0c3c7e-6a51-4d7e-9d5b-2f1a7f7c0b11";
        assert_eq!(
            decode(id),
            Ok(Cursor::ObjectId(Uuid::parse_str(id).unwrap()))
        );
    }

    #[test]
    fn garbage_is_refused() {
        let mut wrong_version = URL_SAFE_NO_PAD.decode(encode(&position())).unwrap();
        wrong_version[0] = 2;
        let mut far_future = URL_SAFE_NO_PAD.decode(encode(&position())).unwrap();
        far_future[1..9].copy_from_slice(&i64::MAX.to_be_bytes());
        let mut before_epoch = far_future.clone();
        before_epoch[1..9].copy_from_slice(&(-1i64).to_be_bytes());
        let text = encode(&position());
        for garbage in [
            String::new(),
            "garbage".into(),
            "AAAA".into(),
            text[..33].to_owned(),
            format!("{text}A"),
            format!("{text}="),
            text.replace(|c: char| c.is_ascii_alphabetic(), "+"),
            URL_SAFE_NO_PAD.encode(wrong_version),
            URL_SAFE_NO_PAD.encode(far_future),
            URL_SAFE_NO_PAD.encode(before_epoch),
            "\0".repeat(34),
        ] {
            assert_eq!(decode(&garbage), Err(InvalidCursor), "{garbage:?}");
        }
    }
}
