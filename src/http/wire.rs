//! Typed WorkOS wire shapes for the hot responses, serialized straight from borrowed data: no
//! intermediate `serde_json::Value` (cheaper), and no extra heap copy of a plaintext value.

pub mod admin;
pub mod byok;
pub mod data_key;
pub mod health;
pub mod keks;
pub mod objects;
pub mod portal;
pub mod rewrap;
pub mod versions;

use serde::Serialize;
use utoipa::ToSchema;

use crate::context::KeyContext;
use crate::vault::ObjectMeta;

pub const ENVIRONMENT_ID: &str = "environment_byok_broker";

#[derive(Serialize, ToSchema)]
pub struct UpdatedBy<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

/// `ObjectMetadata`.
#[derive(Serialize, ToSchema)]
pub struct Metadata<'a> {
    pub context: &'a KeyContext,
    pub environment_id: &'static str,
    pub id: &'a str,
    pub key_id: &'a str,
    pub updated_at: &'a str,
    pub updated_by: UpdatedBy<'a>,
    pub version_id: &'a str,
}

impl<'a> Metadata<'a> {
    pub fn of(meta: &'a ObjectMeta) -> Self {
        Self {
            context: &meta.context,
            environment_id: ENVIRONMENT_ID,
            id: &meta.id,
            key_id: &meta.key_id,
            updated_at: &meta.updated_at,
            updated_by: UpdatedBy {
                id: &meta.updated_by_id,
                name: &meta.updated_by_name,
            },
            version_id: &meta.version_id,
        }
    }
}

/// `Object` (with `value`) and `ObjectWithoutValue` (`value` absent, never null).
#[derive(Serialize, ToSchema)]
pub struct Object<'a> {
    pub id: &'a str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    pub metadata: Metadata<'a>,
}

impl<'a> Object<'a> {
    pub fn of(meta: &'a ObjectMeta, value: Option<&'a str>) -> Self {
        Self {
            id: &meta.id,
            name: &meta.name,
            value,
            metadata: Metadata::of(meta),
        }
    }
}
