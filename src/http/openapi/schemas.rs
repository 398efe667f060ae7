//! Schemas written by hand, for the types whose serde code is hand-written too: a key context
//! (a map with limits the derive cannot express) and the stable error codes (the enum comes from
//! `ErrorCode::ALL`, so a new code appears in the description with nothing else to edit).

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::context::{KeyContext, MAX_NAME_CHARS, MAX_PAIRS, MAX_VALUE_CHARS};
use crate::error::ErrorCode;

impl PartialSchema for KeyContext {
    fn schema() -> RefOr<Schema> {
        let name = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_NAME_CHARS));
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_VALUE_CHARS));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!(
                "A key context: 1-{MAX_PAIRS} pairs of a name (1-{MAX_NAME_CHARS} characters) and a \
                 string value (1-{MAX_VALUE_CHARS} characters), neither containing U+0000. It picks \
                 the KEK and is bound into every wrapped data key."
            )))
            .min_properties(Some(1))
            .max_properties(Some(MAX_PAIRS))
            .property_names(Some(name))
            .additional_properties(Some(value))
            .examples([serde_json::json!({"organization_id": "org_01EHZNVPK3SFK441A1RGBFSHRT"})])
            .into()
    }
}

impl ToSchema for KeyContext {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("KeyContext")
    }
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "The stable error code; the README's table gives each one's meaning and status.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}
