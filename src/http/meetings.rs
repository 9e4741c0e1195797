//! Meeting operations on a booking, its meeting as the caller may see it, and its calendar file.
//!
//! Access: the provider of the booking's service may read and change; the booking's customer may
//! read (the link only once the booking is confirmed); anyone else gets 404, so a booking's
//! existence is never revealed. Changes go through the job queue (`meetingd.touch_job`), so the
//! daemon stays the only one talking to platforms. Manual links and the link a calendar file
//! carries pass `crate::links` (a stored link that fails it is left out of the file).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::db::bookings::{self, ApiBooking as Booking};
use crate::db::{audit, requeue};
use crate::links::Link;
use crate::providers::Platform;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub booking_id: Uuid,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// A link the provider manages by hand: an absolute https URL without credentials or
    /// control characters, at most 2048 characters once normalised. Without it, the meeting is
    /// re-synchronised with the booking (and a manual link cleared).
    pub meeting_link: Option<String>,
}

/// A booking's meeting as the caller may see it.
#[derive(Serialize, ToSchema)]
pub struct MeetingView {
    pub booking_id: Uuid,
    /// Shown to the customer only once the booking is confirmed.
    #[schema(example = "https://us02web.zoom.us/j/81234567890?pwd=Zk9tY2xhV1BqZz09")]
    pub meeting_link: Option<String>,
    #[schema(example = "zoom")]
    pub meeting_platform: Option<String>,
    /// `pending`, `ready`, `failed`, `manual`, `deleted`, or null when there is none yet.
    #[schema(example = "ready")]
    pub meeting_status: Option<String>,
    /// Why the meeting failed (the provider only).
    pub meeting_error: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Provider,
    Customer,
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request("invalid_id", format!("{raw:?} is not a booking id (UUID)")))
}

/// The booking and the caller's role on it; 404 for anyone without one.
async fn load(state: &AppState, caller: &Caller, id: Uuid) -> Result<(Booking, Role), ApiError> {
    let client = state.pool.get().await?;
    let booking = bookings::for_api(client.sql(), id).await?.ok_or_else(|| ApiError::not_found("booking"))?;
    let role = if caller.user_id == booking.provider_id {
        Role::Provider
    } else if caller.user_id == booking.customer_id {
        Role::Customer
    } else {
        return Err(ApiError::not_found("booking"));
    };
    Ok((booking, role))
}

fn provider_only(role: Role) -> Result<(), ApiError> {
    match role {
        Role::Provider => Ok(()),
        Role::Customer => Err(ApiError::forbidden("only the booking's provider can change its meeting")),
    }
}

fn view(b: &Booking, role: Role) -> MeetingView {
    let visible = role == Role::Provider || b.status == "confirmed";
    MeetingView {
        booking_id: b.id,
        meeting_link: b.link.clone().filter(|_| visible),
        meeting_platform: b.platform.clone(),
        meeting_status: b.meeting_status.clone(),
        meeting_error: b.meeting_error.clone().filter(|_| role == Role::Provider),
    }
}

/// Re-arms the booking's job (the daemon then reconciles it) and returns the view after the change.
async fn touch(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let client = state.pool.get().await?;
    requeue::touch_job(client.sql(), id).await?;
    Ok(())
}

/// The JSON body, `None` when it is empty.
fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<Option<T>, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is too large")
        } else {
            ApiError::bad_request("invalid_body", "the request body could not be read")
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the request body is not valid JSON for this endpoint: {e}"))
    })
}

fn accepted(view: MeetingView) -> Response {
    (StatusCode::ACCEPTED, Json(view)).into_response()
}

/// Reconcile a booking's meeting now.
#[utoipa::path(
    post, path = "/api/meetings/create", tag = "meetings", request_body = CreateRequest,
    responses(
        (status = 202, description = "Queued; the daemon creates or repairs the meeting", body = MeetingView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Not a booking of an online service", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = parse_body::<CreateRequest>(body)?
        .ok_or_else(|| ApiError::bad_request("invalid_json", "a body {\"booking_id\": \"…\"} is required"))?;
    let (booking, role) = load(&state, &caller, request.booking_id).await?;
    provider_only(role)?;
    if !booking.is_online {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_online",
            "the booking's service is not an online service",
        ));
    }
    touch(&state, booking.id).await?;
    let (after, role) = load(&state, &caller, booking.id).await?;
    let mut v = view(&after, role);
    v.meeting_status.get_or_insert_with(|| "pending".into());
    Ok(accepted(v))
}

/// Set a manual link, or re-synchronise the meeting with the booking.
#[utoipa::path(
    put, path = "/api/meetings/{booking_id}/update", tag = "meetings", request_body(content = UpdateRequest, description = "Optional"),
    params(("booking_id" = Uuid, Path)),
    responses(
        (status = 202, body = MeetingView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "Not a valid meeting link (absolute https, no credentials, no control characters, at most 2048 characters)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let request: UpdateRequest = parse_body(body)?.unwrap_or_default();
    let (_, role) = load(&state, &caller, id).await?;
    provider_only(role)?;
    let client = state.pool.get().await?;
    // The link and the job's re-arm commit together: the write-back of a run that read the
    // booking before the change is then stale, and never writes over the new link.
    match request.meeting_link {
        Some(link) => bookings::set_manual_link(client.sql(), id, &validate_link(&link)?).await?,
        // Back to meetingd's meeting: a link meetingd did not write goes.
        None => bookings::resync(client.sql(), id).await?,
    }
    record(client.sql(), &caller, id, "meeting.manual_update").await?;
    drop(client);
    let (after, role) = load(&state, &caller, id).await?;
    Ok(accepted(view(&after, role)))
}

/// Delete the meeting at its platform and clear the link (the daemon then leaves the booking's
/// meeting to the provider: status `manual`, no link).
#[utoipa::path(
    delete, path = "/api/meetings/{booking_id}", tag = "meetings", params(("booking_id" = Uuid, Path)),
    responses(
        (status = 202, body = MeetingView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let (_, role) = load(&state, &caller, id).await?;
    provider_only(role)?;
    let client = state.pool.get().await?;
    bookings::clear_to_manual(client.sql(), id).await?;
    record(client.sql(), &caller, id, "meeting.manual_delete").await?;
    drop(client);
    touch(&state, id).await?;
    let (after, role) = load(&state, &caller, id).await?;
    Ok(accepted(view(&after, role)))
}

async fn record(
    client: crate::db::Sql<'_>,
    caller: &Caller,
    booking: Uuid,
    action: &'static str,
) -> Result<(), ApiError> {
    let entry = crate::job::AuditEntry { action, platform: None, outcome: "ok", duration_ms: None, detail: None };
    audit::insert_audit(client, &format!("user:{}", caller.user_id), Some(booking), Some(caller.user_id), None, &entry)
        .await?;
    Ok(())
}

/// A manual link, checked by the one rule for links (`crate::links`); 422 with the reason.
pub fn validate_link(link: &str) -> Result<String, ApiError> {
    Link::parse(link)
        .map(Link::into_string)
        .map_err(|why| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_link", format!("meeting_link {why}")))
}

/// The stored link as a calendar file may carry it: one that breaks the link rule (the app's
/// column can hold anything) is left out, and said so in the log without quoting it.
fn exportable(booking: Uuid, link: Option<String>) -> Option<Link> {
    let raw = link?;
    match Link::parse(&raw) {
        Ok(link) => Some(link),
        Err(why) => {
            tracing::warn!(booking_id = %booking, reason = %why, "meeting link left out of the calendar file");
            None
        }
    }
}

/// The booking's meeting as the caller may see it.
#[utoipa::path(
    get, path = "/api/bookings/{booking_id}/meeting", tag = "meetings", params(("booking_id" = Uuid, Path)),
    responses(
        (status = 200, body = MeetingView, example = json!({
            "booking_id": "5f0c2a9e-8d1b-4c3e-9a7f-2b6d4e8f1a3c", "meeting_link": "https://us02web.zoom.us/j/81234567890?pwd=Zk9tY2xhV1BqZz09",
            "meeting_platform": "zoom", "meeting_status": "ready", "meeting_error": null
        })),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Json<MeetingView>, ApiError> {
    let (booking, role) = load(&state, &caller, parse_id(&raw)?).await?;
    Ok(Json(view(&booking, role)))
}

/// The booking as an iCalendar file, with the meeting link when the caller may see it.
#[utoipa::path(
    get, path = "/api/bookings/{booking_id}/calendar.ics", tag = "meetings", params(("booking_id" = Uuid, Path)),
    responses(
        (status = 200, description = "RFC 5545 calendar", content_type = "text/calendar", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn calendar(
    State(state): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let (b, role) = load(&state, &caller, parse_id(&raw)?).await?;
    let shown = view(&b, role);
    let platform = b.platform.as_deref().and_then(|p| p.parse::<Platform>().ok()).map(|p| p.display_name().to_string());
    let file = crate::ics::render(
        &crate::ics::CalendarBooking {
            booking_id: b.id,
            title: b.title.clone(),
            description: b.description.clone(),
            start: b.start,
            end: b.end,
            cancelled: matches!(b.status.as_str(), "cancelled" | "rejected"),
            sequence: u32::try_from(b.version).unwrap_or(0),
            link: exportable(b.id, shown.meeting_link),
            platform,
            provider_name: b.provider_name.clone(),
        },
        Utc::now(),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"booking-{}.ics\"", b.id)),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        file,
    )
        .into_response())
}
