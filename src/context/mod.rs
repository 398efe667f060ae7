//! Key context: the string→string map that picks a KEK and is bound into every wrapped DEK.
//! Invariants: 1–10 pairs, names 1–120 chars, values 1–500 chars; canonical bytes are independent of
//! insertion order and injective (length-prefixed), so the hash is a stable identity of the context.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod json;

pub const MAX_PAIRS: usize = 10;
pub const MAX_NAME_CHARS: usize = 120;
pub const MAX_VALUE_CHARS: usize = 500;

/// Domain separation for the context hash, so it can never collide with another hash we compute.
const HASH_DOMAIN: &[u8] = b"byok-broker/key-context/v1\0";

/// Why a key context was refused. Every variant names the offending pair where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("key context must have at least one pair")]
    Empty,
    #[error("key context has {count} pairs; at most {MAX_PAIRS} are allowed")]
    TooManyPairs { count: usize },
    #[error("key context has an empty name; names must be 1-{MAX_NAME_CHARS} characters")]
    EmptyName,
    #[error(
        "key context name {name:?} is {chars} characters; at most {MAX_NAME_CHARS} are allowed"
    )]
    NameTooLong { name: String, chars: usize },
    #[error(
        "key context value for {name:?} is empty; values must be 1-{MAX_VALUE_CHARS} characters"
    )]
    EmptyValue { name: String },
    #[error(
        "key context value for {name:?} is {chars} characters; at most {MAX_VALUE_CHARS} are allowed"
    )]
    ValueTooLong { name: String, chars: usize },
    #[error("key context value for {name:?} must be a string")]
    NotAString { name: String },
    /// PostgreSQL cannot store U+0000 in text; refused on every backend so both behave alike.
    #[error("key context name or value {name:?} contains U+0000, which is not allowed")]
    NulCharacter { name: String },
    #[error("key context name {name:?} appears twice")]
    DuplicateName { name: String },
    #[error("key context must be a JSON object of string values")]
    NotAnObject,
}

/// A validated key context. Construct it with [`KeyContext::new`] or [`KeyContext::from_json`].
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct KeyContext {
    pairs: BTreeMap<String, String>,
}

/// The SHA-256 of a context's canonical bytes: used for KEK aliases, cache keys and logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextHash([u8; 32]);

impl KeyContext {
    /// Validates pairs given in any order. A repeated name is an error, not a silent overwrite.
    pub fn new<I, K, V>(pairs: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let name = name.into();
            let value = value.into();
            if map.contains_key(&name) {
                return Err(ContextError::DuplicateName { name });
            }
            map.insert(name, value);
        }
        Self::from_map(map)
    }

    /// Validates a JSON value as sent on the wire (`{"organization_id": "org_acme"}`). A parsed
    /// `Value` has already lost duplicate names: request bodies go through
    /// [`ContextJson`](crate::context::json::ContextJson) instead, which sees every pair.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ContextError> {
        let object = value.as_object().ok_or(ContextError::NotAnObject)?;
        Self::from_json_pairs(object.iter().map(|(k, v)| (k.clone(), v.clone())))
    }

    /// Validates JSON name/value pairs in wire order; a repeated name is an error.
    pub fn from_json_pairs<I>(pairs: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (String, serde_json::Value)>,
    {
        let mut strings = Vec::new();
        for (name, value) in pairs {
            match value {
                serde_json::Value::String(text) => strings.push((name, text)),
                _ => return Err(ContextError::NotAString { name }),
            }
        }
        Self::new(strings)
    }

    fn from_map(pairs: BTreeMap<String, String>) -> Result<Self, ContextError> {
        if pairs.is_empty() {
            return Err(ContextError::Empty);
        }
        if pairs.len() > MAX_PAIRS {
            return Err(ContextError::TooManyPairs { count: pairs.len() });
        }
        for (name, value) in &pairs {
            if name.contains('\0') || value.contains('\0') {
                return Err(ContextError::NulCharacter {
                    name: truncated(name),
                });
            }
            let name_chars = name.chars().count();
            if name_chars == 0 {
                return Err(ContextError::EmptyName);
            }
            if name_chars > MAX_NAME_CHARS {
                return Err(ContextError::NameTooLong {
                    name: truncated(name),
                    chars: name_chars,
                });
            }
            let value_chars = value.chars().count();
            if value_chars == 0 {
                return Err(ContextError::EmptyValue { name: name.clone() });
            }
            if value_chars > MAX_VALUE_CHARS {
                return Err(ContextError::ValueTooLong {
                    name: name.clone(),
                    chars: value_chars,
                });
            }
        }
        Ok(Self { pairs })
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.pairs
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.get(name).map(String::as_str)
    }

    /// Canonical bytes: pair count, then each pair sorted by name, every field length-prefixed
    /// (u32 big-endian). Length prefixes make the encoding injective whatever the strings contain.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let size: usize = self.pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(4 + size);
        out.extend_from_slice(&(self.pairs.len() as u32).to_be_bytes());
        for (name, value) in &self.pairs {
            for field in [name, value] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        out
    }

    /// Parses canonical bytes back into a context, validating it. Never panics on any input.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes;
        let count = take_u32(&mut rest)? as usize;
        if count > MAX_PAIRS {
            return None;
        }
        let mut pairs = Vec::with_capacity(count);
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let name = take_string(&mut rest)?;
            let value = take_string(&mut rest)?;
            // Canonical means strictly sorted names: anything else is not our encoding.
            if previous.as_ref().is_some_and(|p| *p >= name) {
                return None;
            }
            previous = Some(name.clone());
            pairs.push((name, value));
        }
        if !rest.is_empty() {
            return None;
        }
        Self::new(pairs).ok()
    }

    pub fn hash(&self) -> ContextHash {
        let mut hasher = Sha256::new();
        hasher.update(HASH_DOMAIN);
        hasher.update(self.canonical_bytes());
        ContextHash(hasher.finalize().into())
    }

    /// True when every pair of `selector` is also in this context (a subset match).
    pub fn contains(&self, selector: &KeyContext) -> bool {
        selector
            .pairs
            .iter()
            .all(|(k, v)| self.pairs.get(k) == Some(v))
    }
}

impl<'de> Deserialize<'de> for KeyContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::context::json::ContextJson::deserialize(deserializer)?
            .into_context()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for KeyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.pairs.iter()).finish()
    }
}

impl ContextHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for ContextHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextHash({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ContextHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lower-case hex of bytes; used for digests, never for secrets.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0x0f) as usize] as char);
    }
    out
}

/// Error messages quote an over-long name only in part, so a huge input does not make a huge error.
fn truncated(name: &str) -> String {
    let mut short: String = name.chars().take(40).collect();
    short.push('…');
    short
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

fn take_string(rest: &mut &[u8]) -> Option<String> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return None;
    }
    let (field, tail) = rest.split_at(len);
    *rest = tail;
    String::from_utf8(field.to_vec()).ok()
}

#[cfg(test)]
mod tests;
