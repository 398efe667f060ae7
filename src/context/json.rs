//! A key context exactly as it arrived in JSON: every name/value pair in wire order, so a name sent
//! twice is seen and refused. `serde_json::Value` keeps only the last duplicate, which would let
//! `{"organization_id":"a","organization_id":"b"}` pass as org `b` while a proxy or log saw org `a`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{ContextError, KeyContext};

/// The outcome of reading a context field: deserialization itself only fails on malformed JSON,
/// so a bad context becomes the caller's 422 `invalid_context`, not a generic body error.
#[derive(Debug)]
pub struct ContextJson(Result<Vec<(String, Value)>, ContextError>);

impl ContextJson {
    /// Validates the pairs; a repeated name, a non-object or a non-string value is an error.
    pub fn into_context(self) -> Result<KeyContext, ContextError> {
        KeyContext::from_json_pairs(self.0?)
    }
}

impl<'de> Deserialize<'de> for ContextJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PairsVisitor)
    }
}

struct PairsVisitor;

fn not_an_object<E>() -> Result<ContextJson, E> {
    Ok(ContextJson(Err(ContextError::NotAnObject)))
}

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = ContextJson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of string values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContextJson, A::Error> {
        let mut pairs = Vec::new();
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            pairs.push((name, value));
        }
        Ok(ContextJson(Ok(pairs)))
    }

    // Every other JSON shape is consumed and reported as "not an object".
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ContextJson, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        not_an_object()
    }
    fn visit_unit<E: de::Error>(self) -> Result<ContextJson, E> {
        not_an_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<ContextJson, E> {
        not_an_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<ContextJson, E> {
        not_an_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<ContextJson, E> {
        not_an_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<ContextJson, E> {
        not_an_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<ContextJson, E> {
        not_an_object()
    }
}
