//! Object use cases: create, read (by id or name), describe, update with version check, delete,
//! list and versions. Objects outside a scoped key's scope do not exist for it.

use serde_json::json;
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use crate::audit;
use crate::auth::Principal;
use crate::context::KeyContext;
use crate::envelope::{SealedValue, ValueBinding, open_value};
use crate::error::{Error, ErrorCode};
use crate::store::{
    IdempotencyClaim, ListPosition, ListQuery, ListedObject, NewObject, ObjectRecord,
    StoredResponse, VersionRecord,
};

use super::cursor::Cursor;
use super::refusals::Attempt;
use super::{MAX_NAME_CHARS, ObjectMeta, ObjectWithValue, Vault, meta_from_record, org};

/// The stored form of a requested name: trimmed, 1-200 characters, no control characters (a NUL
/// or CR/LF in a name ends up in logs, headers and other systems' string handling).
fn valid_name(name: &str) -> Result<&str, Error> {
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            ErrorCode::InvalidName,
            "name must not contain control characters (NUL, CR, LF, tab, DEL, ...)",
        ));
    }
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(Error::invalid(
            ErrorCode::InvalidName,
            format!("name must be 1-{MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name)
}

fn invalid_cursor() -> Error {
    Error::invalid(
        ErrorCode::InvalidCursor,
        "after/before must be a list_metadata cursor or the id of an object this key can see",
    )
}

/// An `Idempotency-Key` claim to complete with the create: `respond` renders the response to
/// store (status, body) from the new object's metadata.
pub(super) struct IdempotentCreate<'a> {
    pub claim: &'a IdempotencyClaim,
    pub respond: fn(&ObjectMeta) -> (u16, String),
    pub request_hash: Vec<u8>,
}

impl Vault {
    pub async fn create_object(
        &self,
        principal: &Principal,
        name: &str,
        value: &str,
        context: KeyContext,
    ) -> Result<ObjectMeta, Error> {
        self.create_object_once(principal, name, value, context, None)
            .await
    }

    /// Creates an object; with `once`, its claim becomes the stored response in the object's own
    /// transaction, so a replayable response exists exactly when the object does.
    pub(super) async fn create_object_once(
        &self,
        principal: &Principal,
        name: &str,
        value: &str,
        context: KeyContext,
        once: Option<IdempotentCreate<'_>>,
    ) -> Result<ObjectMeta, Error> {
        let mut attempt = Attempt::new(principal, "vault.data.created");
        attempt.touches(&context);
        let outcome = self
            .create_checked(principal, name, value, context, once)
            .await;
        self.settle(attempt, outcome).await
    }

    async fn create_checked(
        &self,
        principal: &Principal,
        name: &str,
        value: &str,
        context: KeyContext,
        once: Option<IdempotentCreate<'_>>,
    ) -> Result<ObjectMeta, Error> {
        let name = valid_name(name)?;
        self.check_value(value)?;
        if !principal.may_use(&context) {
            return Err(Error::OutOfScope);
        }
        // Names are unique per context, and a key that may write a context sees all of it, so
        // `name_taken` reveals nothing outside the caller's scope. Checked before any KMS call.
        let context_hash = context.hash().to_hex();
        if self
            .store
            .name_taken_in_context(name, &context_hash)
            .await?
        {
            return Err(Error::NameTaken);
        }
        let id = Uuid::new_v4().to_string();
        let version = self
            .seal_new_version(principal, &context, &id, value)
            .await?;
        let meta = ObjectMeta {
            id: id.clone(),
            name: name.to_owned(),
            context: context.clone(),
            key_id: version.kek_id.clone(),
            version_id: version.id.clone(),
            updated_at: version.created_at.to_rfc3339(),
            updated_by_id: principal.key_id.clone(),
            updated_by_name: principal.name.clone(),
        };
        // The event commits with the object: an acknowledged write always has its audit record.
        let fields = json!({"kv_name": meta.name, "key_id": meta.key_id, "key_context": context});
        let event = audit::event(Some(principal), "vault.data.created", org(&context), fields);
        let object = NewObject {
            id,
            name: meta.name.clone(),
            context_json: serde_json::to_string(&context)
                .map_err(|e| Error::Internal(e.to_string()))?,
            context_hash,
            actor_id: principal.key_id.clone(),
            actor_name: principal.name.clone(),
            version,
        };
        match once {
            None => self.store.insert_object(object, vec![event]).await?,
            Some(once) => {
                let (status, body) = (once.respond)(&meta);
                let response = StoredResponse {
                    request_hash: once.request_hash,
                    status,
                    body,
                };
                self.store
                    .insert_object_idempotent(object, vec![event], once.claim, response)
                    .await?
            }
        }
        Ok(meta)
    }

    pub async fn read_object(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ObjectWithValue, Error> {
        let mut attempt = Attempt::new(principal, "vault.data.read");
        let outcome = match self.store.get_object(id).await {
            Ok(record) => self.open_object(&mut attempt, record).await,
            Err(e) => Err(e.into()),
        };
        self.settle(attempt, outcome).await
    }

    pub async fn read_object_by_name(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<ObjectWithValue, Error> {
        // Two visible objects can share a name (in different contexts): refuse to guess.
        let mut visible = self
            .store
            .find_objects_by_name(name, scope_pairs(principal), 2)
            .await?;
        if visible.len() > 1 {
            return Err(Error::AmbiguousName);
        }
        let record = visible.pop().ok_or(Error::NotFound("object"))?;
        let mut attempt = Attempt::new(principal, "vault.data.read");
        let outcome = self.open_object(&mut attempt, record).await;
        self.settle(attempt, outcome).await
    }

    async fn open_object(
        &self,
        attempt: &mut Attempt<'_>,
        record: ObjectRecord,
    ) -> Result<ObjectWithValue, Error> {
        let principal = attempt.principal;
        let (record, context) = self.load_visible(attempt, record)?;
        let sealed = SealedValue::decode(&record.sealed)?;
        let kek = self
            .keyring
            .kek_for_read(&sealed.key.kek_id, &context)
            .await?;
        let dek = self
            .unwrap_dek(&kek, &sealed.key.wrapped, &context)
            .await
            .map_err(Error::from_kms)?;
        let binding = ValueBinding {
            object_id: &record.id,
            version_id: &record.current_version,
        };
        let mut plaintext = open_value(&dek, &sealed, &context, binding)?;
        // Moved, not copied, and wiped on every path (a failed audit below drops it too).
        let value = Zeroizing::new(String::from_utf8(std::mem::take(&mut *plaintext)).map_err(
            |e| {
                e.into_bytes().zeroize();
                Error::Internal("stored value is not UTF-8".into())
            },
        )?);
        let meta = meta_from_record(&record, context);
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.data.read",
                org(&meta.context),
                json!({"kv_name": meta.name, "key_id": meta.key_id}),
            ))
            .await?;
        Ok(ObjectWithValue { meta, value })
    }

    pub async fn describe_object(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<ObjectMeta, Error> {
        let mut attempt = Attempt::new(principal, "vault.metadata.read");
        let outcome = self.describe_checked(&mut attempt, id).await;
        self.settle(attempt, outcome).await
    }

    async fn describe_checked(
        &self,
        attempt: &mut Attempt<'_>,
        id: &str,
    ) -> Result<ObjectMeta, Error> {
        let principal = attempt.principal;
        let (record, context) = self.load_visible(attempt, self.store.get_object(id).await?)?;
        let meta = meta_from_record(&record, context);
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.metadata.read",
                org(&meta.context),
                json!({"kv_name": meta.name}),
            ))
            .await?;
        Ok(meta)
    }

    pub async fn update_object(
        &self,
        principal: &Principal,
        id: &str,
        value: &str,
        version_check: Option<String>,
    ) -> Result<ObjectMeta, Error> {
        let mut attempt = Attempt::new(principal, "vault.data.updated");
        let outcome = self
            .update_checked(&mut attempt, id, value, version_check)
            .await;
        self.settle(attempt, outcome).await
    }

    async fn update_checked(
        &self,
        attempt: &mut Attempt<'_>,
        id: &str,
        value: &str,
        version_check: Option<String>,
    ) -> Result<ObjectMeta, Error> {
        let principal = attempt.principal;
        self.check_value(value)?;
        let (record, context) = self.load_visible(attempt, self.store.get_object(id).await?)?;
        if let Some(expected) = &version_check
            && expected != &record.current_version
        {
            // Fail before spending a KMS call; the store re-checks atomically below.
            return Err(Error::VersionConflict);
        }
        let version = self
            .seal_new_version(principal, &context, &record.id, value)
            .await?;
        let meta = ObjectMeta {
            key_id: version.kek_id.clone(),
            version_id: version.id.clone(),
            updated_at: version.created_at.to_rfc3339(),
            updated_by_id: principal.key_id.clone(),
            updated_by_name: principal.name.clone(),
            ..meta_from_record(&record, context)
        };
        let fields =
            json!({"kv_name": meta.name, "key_id": meta.key_id, "key_context": meta.context});
        let event = audit::event(
            Some(principal),
            "vault.data.updated",
            org(&meta.context),
            fields,
        );
        self.store
            .append_version(
                &record.id,
                version_check,
                version,
                principal.key_id.clone(),
                principal.name.clone(),
                vec![event],
            )
            .await?;
        Ok(meta)
    }

    pub async fn delete_object(
        &self,
        principal: &Principal,
        id: &str,
        version_check: Option<String>,
    ) -> Result<String, Error> {
        let mut attempt = Attempt::new(principal, "vault.data.deleted");
        let outcome = self.delete_checked(&mut attempt, id, version_check).await;
        self.settle(attempt, outcome).await
    }

    async fn delete_checked(
        &self,
        attempt: &mut Attempt<'_>,
        id: &str,
        version_check: Option<String>,
    ) -> Result<String, Error> {
        let principal = attempt.principal;
        let (record, context) = self.load_visible(attempt, self.store.get_object(id).await?)?;
        let event = audit::event(
            Some(principal),
            "vault.data.deleted",
            org(&context),
            json!({"kv_name": record.name}),
        );
        self.store
            .delete_object(&record.id, version_check, vec![event])
            .await?;
        Ok(record.name)
    }

    /// One page of the objects the principal may see. `after` / `before` replace the query's.
    pub async fn list_objects(
        &self,
        principal: &Principal,
        mut query: ListQuery,
        after: Option<Cursor>,
        before: Option<Cursor>,
    ) -> Result<(Vec<ListedObject>, bool), Error> {
        query.scope = scope_pairs(principal);
        query.after = self.resolve_cursor(principal, after).await?;
        query.before = self.resolve_cursor(principal, before).await?;
        let page = self.store.list_objects(query).await?;
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.names.listed",
                None,
                json!({}),
            ))
            .await?;
        Ok(page)
    }

    pub async fn list_versions(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Vec<VersionRecord>, Error> {
        let mut attempt = Attempt::new(principal, "vault.versions.listed");
        let outcome = self.list_versions_checked(&mut attempt, id).await;
        self.settle(attempt, outcome).await
    }

    /// Lists the versions and records `vault.versions.listed` (who looked at an object's
    /// history is as much the tenant's business as who read its value).
    async fn list_versions_checked(
        &self,
        attempt: &mut Attempt<'_>,
        id: &str,
    ) -> Result<Vec<VersionRecord>, Error> {
        let principal = attempt.principal;
        let (record, context) = self.load_visible(attempt, self.store.get_object(id).await?)?;
        let versions = self.store.list_versions(&record.id).await?;
        let fields = json!({"kv_name": record.name, "versions": versions.len()});
        self.audit
            .record(audit::event(
                Some(principal),
                "vault.versions.listed",
                org(&context),
                fields,
            ))
            .await?;
        Ok(versions)
    }

    /// A plain object id counts only when the caller may see that object; a foreign id and an
    /// unknown one get the same answer.
    async fn resolve_cursor(
        &self,
        principal: &Principal,
        cursor: Option<Cursor>,
    ) -> Result<Option<ListPosition>, Error> {
        let id = match cursor {
            None => return Ok(None),
            Some(Cursor::Position(position)) => return Ok(Some(position)),
            Some(Cursor::ObjectId(id)) => id,
        };
        let (position, context_json) = self
            .store
            .object_position(&id.to_string())
            .await?
            .ok_or_else(invalid_cursor)?;
        let context: KeyContext = serde_json::from_str(&context_json)
            .map_err(|e| Error::Internal(format!("stored context: {e}")))?;
        if !principal.may_use(&context) {
            return Err(invalid_cursor());
        }
        Ok(Some(position))
    }
}

/// The principal's scope as pairs every visible context must contain (none when unscoped).
fn scope_pairs(principal: &Principal) -> Vec<(String, String)> {
    principal
        .scope
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}
