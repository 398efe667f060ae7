//! What a tenant KMS key event asks of the broker, read from the EventBridge envelope of a
//! CloudTrail record (`source: aws.kms`, `detail-type: AWS API Call via CloudTrail`). Pure
//! parsing, no I/O: the handler (`push`) decides what to do with the keys it names.

use serde_json::Value;

/// What the event's API call means for a registered CMK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The key can no longer be used (`DisableKey`, `ScheduleKeyDeletion`): refuse at once. The
    /// reason is the one the watcher would record for the same state.
    Revoke(&'static str),
    /// Use may have changed in a way `DescribeKey` does not show (`PutKeyPolicy`, `RevokeGrant`,
    /// `RetireGrant`), or the key may be usable again (`EnableKey`, `CancelKeyDeletion`): check
    /// with a round trip through the tenant's role before any verdict.
    Verify,
}

/// A key event: the action, the account that sent it (EventBridge sets it; a sender cannot
/// choose it), and the keys it names as (region, account, key id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    pub name: String,
    pub action: Action,
    pub account: String,
    pub keys: Vec<KeyName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName {
    pub region: String,
    pub account: String,
    pub key_id: String,
}

impl KeyName {
    /// A KMS key ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`); aliases are not keys.
    pub fn from_arn(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        let (arn_tag, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
        let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
        let key_id = resource.strip_prefix("key/")?;
        let ok = arn_tag == "arn"
            && service == "kms"
            && !region.is_empty()
            && !account.is_empty()
            && !key_id.is_empty();
        ok.then(|| Self {
            region: region.to_owned(),
            account: account.to_owned(),
            key_id: key_id.to_owned(),
        })
    }
}

/// The message is not a key event the broker can read: it goes to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed key event: {0}")]
pub struct Malformed(pub &'static str);

/// `Ok(None)`: a well-formed event the broker has nothing to do for (another source or API
/// call, or a call that failed and so changed nothing).
pub fn parse(body: &str) -> Result<Option<KeyEvent>, Malformed> {
    let event: Value = serde_json::from_str(body).map_err(|_| Malformed("not JSON"))?;
    let text = |v: &Value, field: &str| v.get(field).and_then(Value::as_str).map(str::to_owned);
    let detail = event
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or(Malformed("no detail"))?;
    let account = text(&event, "account").ok_or(Malformed("no account"))?;
    if text(&event, "source").as_deref() != Some("aws.kms") {
        return Ok(None);
    }
    let name = text(detail, "eventName").ok_or(Malformed("no detail.eventName"))?;
    let action = match name.as_str() {
        "DisableKey" => Action::Revoke("key_disabled"),
        "ScheduleKeyDeletion" => Action::Revoke("key_pendingdeletion"),
        "PutKeyPolicy" | "RevokeGrant" | "RetireGrant" | "EnableKey" | "CancelKeyDeletion" => {
            Action::Verify
        }
        _ => return Ok(None),
    };
    // The call was refused: the key is as it was.
    if detail.get("errorCode").is_some_and(|c| !c.is_null()) {
        return Ok(None);
    }
    let region = text(detail, "awsRegion")
        .or_else(|| text(&event, "region"))
        .ok_or(Malformed("no region"))?;
    let owner = text(detail, "recipientAccountId").unwrap_or_else(|| account.clone());
    let mut keys: Vec<KeyName> = Vec::new();
    let resources = detail.get("resources").and_then(Value::as_array);
    for arn in resources.into_iter().flatten().filter_map(|r| r.get("ARN")) {
        keys.extend(arn.as_str().and_then(KeyName::from_arn));
    }
    let key_id = detail
        .get("requestParameters")
        .and_then(|p| text(p, "keyId"));
    if let Some(key_id) = key_id {
        if key_id.starts_with("arn:") {
            keys.extend(KeyName::from_arn(&key_id));
        } else if !key_id.starts_with("alias/") && !key_id.is_empty() {
            // A bare key id names a key in the account and region the call was made in.
            keys.push(KeyName {
                region,
                account: owner,
                key_id,
            });
        }
    }
    keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    keys.dedup();
    if keys.is_empty() {
        return Err(Malformed("names no key"));
    }
    Ok(Some(KeyEvent {
        name,
        action,
        account,
        keys,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:kms:us-east-1:111111111111:key/1234";

    fn event(name: &str, key_id: &str) -> String {
        json!({
            "version": "0", "id": "e1", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.kms", "account": "111111111111", "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventSource": "kms.amazonaws.com", "eventName": name,
                "awsRegion": "us-east-1", "recipientAccountId": "111111111111",
                "requestParameters": {"keyId": key_id},
                "resources": [{"accountId": "111111111111", "type": "AWS::KMS::Key", "ARN": ARN}]
            }
        })
        .to_string()
    }

    #[test]
    fn revocations_and_checks_name_their_keys() {
        let parsed = parse(&event("DisableKey", "1234")).unwrap().unwrap();
        assert_eq!(parsed.action, Action::Revoke("key_disabled"));
        assert_eq!(parsed.keys, vec![KeyName::from_arn(ARN).unwrap()]);
        let parsed = parse(&event("ScheduleKeyDeletion", ARN)).unwrap().unwrap();
        assert_eq!(parsed.action, Action::Revoke("key_pendingdeletion"));
        for name in [
            "PutKeyPolicy",
            "RevokeGrant",
            "RetireGrant",
            "EnableKey",
            "CancelKeyDeletion",
        ] {
            assert_eq!(
                parse(&event(name, "1234")).unwrap().unwrap().action,
                Action::Verify
            );
        }
    }

    #[test]
    fn other_calls_failed_calls_and_other_sources_are_ignored() {
        assert_eq!(parse(&event("Decrypt", "1234")), Ok(None));
        let mut failed: Value = serde_json::from_str(&event("DisableKey", "1234")).unwrap();
        failed["detail"]["errorCode"] = json!("AccessDeniedException");
        assert_eq!(parse(&failed.to_string()), Ok(None));
        let mut other: Value = serde_json::from_str(&event("DisableKey", "1234")).unwrap();
        other["source"] = json!("aws.s3");
        assert_eq!(parse(&other.to_string()), Ok(None));
    }

    #[test]
    fn a_bare_key_id_is_in_the_calls_account_and_region() {
        let mut bare: Value = serde_json::from_str(&event("DisableKey", "abcd")).unwrap();
        bare["detail"]["resources"] = json!([]);
        let parsed = parse(&bare.to_string()).unwrap().unwrap();
        assert_eq!(
            parsed.keys,
            vec![KeyName::from_arn("arn:aws:kms:us-east-1:111111111111:key/abcd").unwrap()]
        );
    }

    #[test]
    fn what_cannot_be_read_is_malformed() {
        assert!(parse("not json").is_err());
        assert!(parse("{}").is_err());
        assert!(parse(&json!({"account": "1", "detail": "x"}).to_string()).is_err());
        let mut no_key: Value = serde_json::from_str(&event("DisableKey", "alias/x")).unwrap();
        no_key["detail"]["resources"] = json!([]);
        assert_eq!(parse(&no_key.to_string()), Err(Malformed("names no key")));
    }
}
