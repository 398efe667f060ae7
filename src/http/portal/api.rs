//! `/portal/api`: what the page calls, as the session's organization. A BYOK key is visible only
//! when its `match_context` names the session's `organization_id`; anything else answers 404, as
//! if it did not exist. Registrations always get `{"organization_id": <the session's>}` as match
//! context, whatever the body says. Every change is audited with the session as actor.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::super::extract::{JsonBody, QueryParams};
use super::super::wire::admin::{Event, List};
use super::super::wire::byok::ByokKey;
use super::super::wire::portal::{PortalSessionInfo, PortalSetup, SignedOut};
use super::super::wire::rewrap::RewrapJob;
use super::session::{PortalCaller, set_cookie};
use crate::broker::Broker;
use crate::context::KeyContext;
use crate::error::Error;
use crate::keyring::bindings::Binding;
use crate::rewrap::RewrapSource;
use crate::services::actor::Actor;
use crate::services::audit::EventQuery;
use crate::services::byok::service::KeySpec;
use crate::services::portal::{Portal, PortalSession};
use crate::timestamp::Timestamp;

/// Events per page of the key activity list.
const EVENTS_PER_PAGE: usize = 20;

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/portal/api/session", get(session))
        .route("/portal/api/sign_out", post(sign_out))
        .route("/portal/api/setup", get(setup))
        .route("/portal/api/keys", get(list).post(register))
        .route("/portal/api/keys/{id}", get(show))
        .route("/portal/api/keys/{id}/rotate", post(rotate))
        .route("/portal/api/keys/{id}/disable", post(disable))
        .route("/portal/api/keys/{id}/enable", post(enable))
        .route("/portal/api/keys/{id}/retire", post(retire))
        .route("/portal/api/keys/{id}/onboard", post(onboard))
        .route("/portal/api/rewrap-jobs/{id}", get(rewrap_job))
        .route("/portal/api/events", get(events))
}

/// The key, if it belongs to the session's organization.
fn own_binding(broker: &Broker, session: &PortalSession, id: &str) -> Result<Binding, Error> {
    broker
        .byok
        .bindings()
        .get(id)
        .filter(|b| b.match_context.get("organization_id") == Some(&session.organization_id))
        .cloned()
        .ok_or(Error::NotFound("BYOK key"))
}

async fn key_view(broker: &Broker, binding: &Binding) -> Result<serde_json::Value, Error> {
    let counts = broker.byok.count_objects_by_kek().await?;
    let outside = broker.byok.count_objects_outside(binding).await?;
    let rotations = broker.byok.kek_rotations().await?;
    serde_json::to_value(ByokKey::of(binding, &counts, outside, &rotations))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The session's organization and its CSRF token.
#[utoipa::path(get, path = "/portal/api/session", operation_id = "portal_session", tag = "portal",
    security(("portal_session" = [])), responses((status = 200, description = "The session", body = PortalSessionInfo)))]
async fn session(caller: PortalCaller) -> Response {
    let PortalCaller { session, secret } = caller;
    Json(PortalSessionInfo {
        csrf_token: Portal::csrf_token(&secret),
        organization_id: &session.organization_id,
        return_url: session.return_url.as_deref(),
        success_url: session.success_url.as_deref(),
    })
    .into_response()
}

/// Ends the session and clears its cookie.
#[utoipa::path(post, path = "/portal/api/sign_out", operation_id = "portal_sign_out", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), responses((status = 200, description = "Signed out", body = SignedOut)))]
async fn sign_out(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
) -> Result<Response, Error> {
    broker
        .portal
        .sign_out(&caller.secret, &caller.session)
        .await?;
    let cookie = set_cookie(None, broker.config.tls.is_some());
    let mut response = Json(SignedOut { signed_out: true }).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// What the tenant creates in its AWS account, as JSON documents the page shows with copy buttons.
#[utoipa::path(get, path = "/portal/api/setup", operation_id = "portal_setup", tag = "portal",
    security(("portal_session" = [])), responses((status = 200, description = "The documents", body = PortalSetup)))]
async fn setup(State(broker): State<Arc<Broker>>, caller: PortalCaller) -> Result<Response, Error> {
    let org = &caller.session.organization_id;
    let external_id = broker.byok.byok_external_id(org).await?.external_id;
    let principal = broker
        .config
        .portal
        .broker_principal_arn
        .clone()
        .unwrap_or_else(|| "arn:aws:iam::<broker account id>:root".into());
    let key_settings = json!({
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "MultiRegion": false,
        "EnableKeyRotation": true
    });
    let trust_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": external_id}}
        }]
    });
    let role_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["kms:DescribeKey", "kms:GenerateDataKey", "kms:Decrypt", "kms:Encrypt",
                       "kms:ReEncrypt*", "kms:GetKeyRotationStatus"],
            "Resource": "arn:aws:kms:<region>:<your account id>:key/<your key id>"
        }]
    });
    let event_rule = broker.config.byok_events_queue_url.as_ref().map(|_| {
        json!({
            "source": ["aws.kms"],
            "detail-type": ["AWS API Call via CloudTrail"],
            "detail": {
                "eventSource": ["kms.amazonaws.com"],
                "eventName": ["DisableKey", "ScheduleKeyDeletion", "EnableKey", "CancelKeyDeletion",
                              "PutKeyPolicy", "RevokeGrant", "RetireGrant"],
                "resources": {"ARN": ["arn:aws:kms:<region>:<your account id>:key/<your key id>"]}
            }
        })
    });
    Ok(Json(PortalSetup {
        broker_principal_arn: principal,
        event_rule,
        external_id,
        key_settings,
        organization_id: org,
        role_policy,
        trust_policy,
    })
    .into_response())
}

/// The organization's BYOK keys.
#[utoipa::path(get, path = "/portal/api/keys", operation_id = "portal_list_keys", tag = "portal",
    security(("portal_session" = [])), responses((status = 200, description = "The keys", body = List<ByokKey>)))]
async fn list(State(broker): State<Arc<Broker>>, caller: PortalCaller) -> Result<Response, Error> {
    let bindings = broker.byok.bindings();
    let mut data = Vec::new();
    for binding in bindings.all() {
        if binding.match_context.get("organization_id") == Some(&caller.session.organization_id) {
            data.push(key_view(&broker, binding).await?);
        }
    }
    Ok(Json(List::of(data)).into_response())
}

/// A key and role from the page: never a match context or external id (the broker sets both).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    key_arn: String,
    #[serde(default)]
    role_arn: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl From<KeyRequest> for KeySpec {
    fn from(key: KeyRequest) -> Self {
        KeySpec {
            key_arn: key.key_arn.trim().to_owned(),
            region: key.region.filter(|r| !r.trim().is_empty()),
            role_arn: key
                .role_arn
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty()),
            external_id: None,
        }
    }
}

/// Registers a key for the session's organization (match context `{"organization_id": ...}`).
#[utoipa::path(post, path = "/portal/api/keys", operation_id = "portal_register_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), request_body = KeyRequest,
    responses((status = 201, description = "Registered", body = ByokKey)))]
async fn register(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    JsonBody(body): JsonBody<KeyRequest>,
) -> Result<Response, Error> {
    let session = &caller.session;
    let context = KeyContext::new([("organization_id", session.organization_id.as_str())])?;
    let outcome = broker
        .byok
        .register_byok_key(Actor::Portal(session), context, body.into())
        .await;
    let fields = match &outcome {
        Ok(binding) => json!({"byok_key_id": binding.id(), "outcome": "registered"}),
        Err(e) => json!({"outcome": "refused", "code": e.code().as_str()}),
    };
    broker
        .portal
        .record(session, "portal.byok_key.registration_attempted", fields)
        .await?;
    let binding = outcome?;
    Ok((
        StatusCode::CREATED,
        Json(key_view(&broker, &binding).await?),
    )
        .into_response())
}

/// One of the organization's keys.
#[utoipa::path(get, path = "/portal/api/keys/{id}", operation_id = "portal_get_key", tag = "portal",
    security(("portal_session" = [])), params(("id" = String, Path, description = "BYOK key id")), responses((status = 200, description = "The key", body = ByokKey)))]
async fn show(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let binding = own_binding(&broker, &caller.session, &id)?;
    Ok(Json(key_view(&broker, &binding).await?).into_response())
}

/// Which change a session asks for on one of its keys.
enum Change {
    Disable,
    Enable,
    Retire,
    Rotate(KeySpec),
}

async fn change(
    broker: &Broker,
    caller: &PortalCaller,
    id: &str,
    change: Change,
) -> Result<Response, Error> {
    own_binding(broker, &caller.session, id)?;
    let actor = Actor::Portal(&caller.session);
    let (name, outcome) = match change {
        Change::Disable => (
            "portal.byok_key.disabled",
            broker.byok.disable_byok_key(actor, id).await,
        ),
        Change::Enable => (
            "portal.byok_key.enabled",
            broker.byok.enable_byok_key(actor, id).await,
        ),
        Change::Retire => (
            "portal.byok_key.retired",
            broker.byok.retire_byok_key(actor, id).await,
        ),
        Change::Rotate(spec) => (
            "portal.byok_key.rotated",
            broker.byok.rotate_byok_key(actor, id, spec).await,
        ),
    };
    let fields = match &outcome {
        Ok(_) => json!({"byok_key_id": id, "outcome": "done"}),
        Err(e) => json!({"byok_key_id": id, "outcome": "refused", "code": e.code().as_str()}),
    };
    broker.portal.record(&caller.session, name, fields).await?;
    let binding = outcome?;
    Ok(Json(key_view(broker, &binding).await?).into_response())
}

/// Stops serving the key's data until enabled again.
#[utoipa::path(post, path = "/portal/api/keys/{id}/disable", operation_id = "portal_disable_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), params(("id" = String, Path, description = "BYOK key id")), responses((status = 200, description = "The key", body = ByokKey)))]
async fn disable(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    change(&broker, &caller, &id, Change::Disable).await
}

/// Serves the key's data again.
#[utoipa::path(post, path = "/portal/api/keys/{id}/enable", operation_id = "portal_enable_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), params(("id" = String, Path, description = "BYOK key id")), responses((status = 200, description = "The key", body = ByokKey)))]
async fn enable(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    change(&broker, &caller, &id, Change::Enable).await
}

/// Retires the key (offboarding).
#[utoipa::path(post, path = "/portal/api/keys/{id}/retire", operation_id = "portal_retire_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), params(("id" = String, Path, description = "BYOK key id")), responses((status = 200, description = "The key", body = ByokKey)))]
async fn retire(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    change(&broker, &caller, &id, Change::Retire).await
}

/// Points the key at a new CMK.
#[utoipa::path(post, path = "/portal/api/keys/{id}/rotate", operation_id = "portal_rotate_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), params(("id" = String, Path, description = "BYOK key id")), request_body = KeyRequest,
    responses((status = 200, description = "The key", body = ByokKey)))]
async fn rotate(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<KeyRequest>,
) -> Result<Response, Error> {
    change(&broker, &caller, &id, Change::Rotate(body.into())).await
}

#[utoipa::path(post, path = "/portal/api/keys/{id}/onboard", operation_id = "portal_onboard_key", tag = "portal",
    security(("portal_session" = [], "portal_csrf" = [])), params(("id" = String, Path, description = "BYOK key id")), responses((status = 202, description = "The rewrap jobs started", body = List<RewrapJob>)))]
/// Moves the organization's data to where it belongs now: onboarding (one rewrap job per platform
/// KEK the key's covered objects still sit under), after a rotation the earlier CMKs' objects,
/// after retirement everything under the tenant's CMKs (offboarding).
async fn onboard(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let binding = own_binding(&broker, &caller.session, &id)?;
    let mut sources = Vec::new();
    if !binding.record.retired {
        for kek in broker.byok.keks_outside(&binding).await? {
            sources.push(RewrapSource::Kek(kek));
        }
    }
    // After a rotation, the earlier CMKs; after retirement, all of them (offboarding).
    if binding.record.retired || binding.record.keks.len() > 1 {
        sources.push(RewrapSource::ByokKey(id.clone()));
    }
    let mut jobs = Vec::new();
    for source in sources {
        let job = broker
            .rewrap
            .start_rewrap_job(Actor::Portal(&caller.session), source)
            .await?;
        let status = broker.rewrap.rewrap_status(&job.id).await?;
        jobs.push(
            serde_json::to_value(RewrapJob::of(&status))
                .map_err(|e| Error::Internal(e.to_string()))?,
        );
    }
    let ids: Vec<&str> = jobs.iter().filter_map(|j| j["id"].as_str()).collect();
    broker
        .portal
        .record(
            &caller.session,
            "portal.byok_key.onboarding_started",
            json!({"byok_key_id": id, "rewrap_job_ids": ids}),
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(List::of(jobs))).into_response())
}

#[utoipa::path(get, path = "/portal/api/rewrap-jobs/{id}", operation_id = "portal_get_rewrap_job", tag = "portal",
    security(("portal_session" = [])), params(("id" = String, Path, description = "Rewrap job id")),
    responses((status = 200, description = "The job", body = RewrapJob)))]
/// A rewrap job the session's organization started: its `portal.byok_key.onboarding_started`
/// event (recorded after the job began) names it; any other job id answers 404.
async fn rewrap_job(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let status = broker.rewrap.rewrap_status(&id).await?;
    let since = Timestamp::parse(&status.job.started_at).map(Timestamp::to_rfc3339);
    let (events, _) = broker
        .audit
        .list_events(EventQuery {
            events: vec!["portal.byok_key.onboarding_started".into()],
            organization_id: Some(caller.session.organization_id.clone()),
            range_start: since,
            range_end: None,
            after: None,
            limit: 100,
        })
        .await?;
    let started_here = events.iter().any(|event| {
        serde_json::from_str::<serde_json::Value>(&event.data_json)
            .ok()
            .and_then(|data| data["rewrap_job_ids"].as_array().cloned())
            .is_some_and(|ids| ids.iter().any(|j| j.as_str() == Some(id.as_str())))
    });
    if !started_here {
        return Err(Error::NotFound("rewrap job"));
    }
    Ok(Json(RewrapJob::of(&status)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsPage {
    /// The `list_metadata.after` of the previous page.
    #[serde(default)]
    after: Option<String>,
}

/// The organization's audit events, newest first, 20 a page.
#[utoipa::path(get, path = "/portal/api/events", operation_id = "portal_list_events", tag = "portal",
    security(("portal_session" = [])), params(EventsPage), responses((status = 200, description = "A page of events", body = List<Event>)))]

async fn events(
    State(broker): State<Arc<Broker>>,
    caller: PortalCaller,
    QueryParams(page): QueryParams<EventsPage>,
) -> Result<Response, Error> {
    let filter = EventQuery {
        events: Vec::new(),
        organization_id: Some(caller.session.organization_id.clone()),
        range_start: None,
        range_end: None,
        after: page.after.filter(|a| !a.is_empty()),
        limit: EVENTS_PER_PAGE,
    };
    let (page, more) = broker.audit.list_events(filter).await?;
    let data = page.iter().map(Event::of).collect::<Result<Vec<_>, _>>()?;
    let after = more.then(|| page.last().map(|e| e.id.clone())).flatten();
    Ok(Json(List::paged(data, after)).into_response())
}
