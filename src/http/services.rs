//! A service's meeting platform and settings, for its provider: `GET` / `PUT
//! /api/services/{id}/meeting`, with the rules a platform selector must follow.
//!
//! An online service must name a platform; the platform must be one this deployment offers
//! (`GET /api/platforms`); one with accounts must be connected by the provider (409
//! `platform_not_connected`, with the app's Integrations page to send them to); the settings must
//! parse (the rules of `settings::parse`) and use only options the platform honours. The rules are
//! the database's (`meetingd.set_service_meeting`, which apps that write `services` themselves call
//! too), over what the daemon published (`providers::offer`): this handler checks who may change
//! the service and turns a refusal into its answer. On success the service's columns are written
//! and its upcoming confirmed bookings re-armed, in one statement (`db::services`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::db::services::{self, Refusal};

#[derive(Serialize, ToSchema)]
pub struct ServiceMeetingView {
    /// `google_meet`, `zoom`, `teams`, `jitsi`, or `null` (no platform: the fallback's).
    #[schema(example = "zoom")]
    pub platform: Option<String>,
    /// `services.meeting_settings`: `title`, `description` and the meeting options.
    #[schema(value_type = Object, example = json!({"waiting_room": true, "recording": "cloud"}))]
    pub settings: serde_json::Value,
    /// Whether the service is online (only online services get meetings).
    pub is_online: bool,
    /// Upcoming confirmed bookings re-armed by this change (`PUT` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rearmed: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceMeetingUpdate {
    /// The platform, or `null` for none (allowed only for a service that is not online).
    #[schema(example = "zoom")]
    pub platform: Option<String>,
    /// The new `meeting_settings` (absent or `null`: none).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"waiting_room": true, "passcode": true}))]
    pub settings: Option<serde_json::Value>,
}

/// The service, when the caller is its provider.
async fn owned(state: &AppState, caller: &Caller, id: Uuid) -> Result<services::ServiceMeeting, ApiError> {
    caller.require_provider()?;
    let client = state.pool.get().await?;
    services::meeting_of(client.sql(), id)
        .await?
        .filter(|s| s.provider_id == Some(caller.user_id))
        .ok_or_else(|| ApiError::not_found("service"))
}

fn settings_value(text: Option<&str>) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_else(|| serde_json::json!({}))
}

/// A service's meeting platform and settings.
#[utoipa::path(
    get, path = "/api/services/{id}/meeting", tag = "services",
    params(("id" = Uuid, Path, description = "services.id")),
    responses(
        (status = 200, body = ServiceMeetingView, example = json!({
            "platform": "zoom", "settings": {"waiting_room": true, "recording": "cloud"}, "is_online": true
        })),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<ServiceMeetingView>, ApiError> {
    let service = owned(&state, &caller, id).await?;
    Ok(Json(ServiceMeetingView {
        platform: service.platform.filter(|p| !p.trim().is_empty()),
        settings: settings_value(service.settings.as_deref()),
        is_online: service.is_online,
        rearmed: None,
    }))
}

/// Sets a service's meeting platform and settings, checked as a platform selector must, and
/// re-arms its upcoming bookings.
#[utoipa::path(
    put, path = "/api/services/{id}/meeting", tag = "services",
    params(("id" = Uuid, Path, description = "services.id")),
    request_body(content = ServiceMeetingUpdate, example = json!({"platform": "zoom", "settings": {"waiting_room": true, "recording": "cloud"}})),
    responses(
        (status = 200, description = "Saved; the service's upcoming confirmed bookings are re-armed", body = ServiceMeetingView,
            example = json!({"platform": "zoom", "settings": {"waiting_room": true, "recording": "cloud"}, "is_online": true, "rearmed": 2})),
        (status = 409, description = "`platform_not_connected`: the provider has not connected the platform; `error.location` is the app's Integrations page", body = ErrorBody,
            example = json!({"error": {"code": "platform_not_connected",
                "message": "Connect Zoom under Integrations (POST /api/auth/zoom/connect) before choosing it.",
                "location": "https://app.example.com/dashboard/integrations"}})),
        (status = 422, description = "`platform_required` (an online service needs one), `unknown_platform`, `platform_unavailable` (not offered here), `invalid_settings`, `unsupported_option` (the platform cannot honour it)", body = ErrorBody,
            examples(
                ("platform_required" = (value = json!({"error": {"code": "platform_required",
                    "message": "An online service needs a meeting platform; GET /api/platforms lists the ones offered."}}))),
                ("unknown_platform" = (value = json!({"error": {"code": "unknown_platform",
                    "message": "unknown meeting platform \"skype\"; the platforms are google_meet, jitsi, teams, zoom."}}))),
                ("platform_unavailable" = (value = json!({"error": {"code": "platform_unavailable",
                    "message": "Google Meet is not offered on this server."}}))),
                ("invalid_settings" = (value = json!({"error": {"code": "invalid_settings",
                    "message": "The meeting setting \"recording\" must be \"none\", \"local\" or \"cloud\"."}}))),
                ("unsupported_option" = (value = json!({"error": {"code": "unsupported_option",
                    "message": "Microsoft Teams cannot honour the meeting option \"mute_on_entry\"; remove it or choose another platform."}})))
            )),
        (status = 503, description = "`platforms_unpublished`: `meetingd.platforms` is empty (each daemon fills it at start-up, before it serves this API)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Json(change): Json<ServiceMeetingUpdate>,
) -> Result<Json<ServiceMeetingView>, ApiError> {
    let service = owned(&state, &caller, id).await?;
    let settings = change.settings.filter(|s| !s.is_null()).unwrap_or_else(|| serde_json::json!({}));
    let platform = change.platform.as_deref().map(str::trim).filter(|p| !p.is_empty());
    let client = state.pool.get().await?;
    let rearmed =
        services::set_meeting(client.sql(), id, platform, &settings).await?.map_err(|r| refused(&state, r))?;
    tracing::info!(service_id = %id, platform = platform.unwrap_or("none"), rearmed, "service meeting platform set");
    Ok(Json(ServiceMeetingView {
        platform: platform.map(str::to_string),
        settings,
        is_online: service.is_online,
        rearmed: Some(rearmed),
    }))
}

/// The codes of `meetingd.check_service_meeting` answered 422.
const UNPROCESSABLE: [&str; 5] =
    ["invalid_settings", "platform_required", "unknown_platform", "platform_unavailable", "unsupported_option"];

/// The answer to a refusal of the database's rules.
fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    match refusal.code.as_str() {
        "platform_not_connected" => {
            let page =
                state.config.http.app_url.join("/dashboard/integrations").map(|u| u.to_string()).unwrap_or_default();
            ApiError::new(StatusCode::CONFLICT, "platform_not_connected", refusal.message).at(page)
        }
        "not_found" => ApiError::not_found("service"),
        // The daemon publishes them before it serves the API: only a database reset in between.
        "platforms_unpublished" => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "platforms_unpublished", refusal.message)
        }
        code => match UNPROCESSABLE.into_iter().find(|c| *c == code) {
            Some(code) => ApiError::unprocessable(code, refusal.message),
            None => ApiError::internal(format!("meetingd.set_service_meeting refused with an unknown code {code:?}")),
        },
    }
}
