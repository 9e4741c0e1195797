//! A service's meeting platform and settings, for its provider: `GET` / `PUT
//! /api/services/{id}/meeting`, with the rules a platform selector must follow.
//!
//! An online service must name a platform; the platform must be one this deployment offers
//! (`GET /api/platforms`); one with accounts must be connected by the provider (409
//! `platform_not_connected`, with the app's Integrations page to send them to); the settings must
//! parse (`settings::parse`) and use only options the platform honours. On success the service's
//! columns are written and its upcoming confirmed bookings re-armed, in one statement. It names no
//! platform; statements are `db::services`' and `db::integrations`'.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::db::{integrations, services};
use crate::providers::{Platform, auth};
use crate::settings;

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
    responses((status = 200, body = ServiceMeetingView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
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
    request_body = ServiceMeetingUpdate,
    responses(
        (status = 200, description = "Saved; the service's upcoming confirmed bookings are re-armed", body = ServiceMeetingView),
        (status = 409, description = "`platform_not_connected`: the provider has not connected the platform; `error.location` is the app's Integrations page", body = ErrorBody),
        (status = 422, description = "`platform_required` (an online service needs one), `unknown_platform`, `platform_unavailable` (not offered here), `invalid_settings`, `unsupported_option` (the platform cannot honour it)", body = ErrorBody),
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
    let settings = change.settings.unwrap_or_else(|| serde_json::json!({}));
    let parsed = settings::parse(&settings).map_err(|e| ApiError::unprocessable("invalid_settings", e))?;
    let platform = match change.platform.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        None if service.is_online => {
            return Err(ApiError::unprocessable(
                "platform_required",
                "An online service needs a meeting platform; GET /api/platforms lists the ones offered.",
            ));
        }
        None => None,
        Some(name) => Some(name.parse::<Platform>().map_err(|e| ApiError::unprocessable("unknown_platform", e))?),
    };
    if let Some(platform) = platform {
        let Some(provider) = state.offered(platform) else {
            return Err(ApiError::unprocessable(
                "platform_unavailable",
                format!("{} is not offered on this server.", platform.display_name()),
            ));
        };
        if let Some(option) = provider.ignored_options(&parsed.options).into_iter().next() {
            return Err(ApiError::unprocessable(
                "unsupported_option",
                format!(
                    "{} cannot honour the meeting option \"{}\"; remove it or choose another platform.",
                    platform.display_name(),
                    option.as_str()
                ),
            ));
        }
        if platform.needs_account() {
            let client = state.pool.get().await?;
            let connected = integrations::of_user(client.sql(), caller.user_id, &state.lifetimes())
                .await?
                .iter()
                .any(|c| c.platform == platform.as_str() && c.active);
            if !connected {
                let page = state
                    .config
                    .http
                    .app_url
                    .join("/dashboard/integrations")
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let connect = auth::spec(platform)
                    .map(|s| format!(" (POST /api/auth/{}/connect)", s.path_segment))
                    .unwrap_or_default();
                return Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "platform_not_connected",
                    format!("Connect {} under Integrations{connect} before choosing it.", platform.display_name()),
                )
                .at(page));
            }
        }
    }
    let client = state.pool.get().await?;
    let rearmed = services::set_meeting(client.sql(), id, platform.map(Platform::as_str), &settings).await?;
    tracing::info!(service_id = %id, platform = platform.map_or("none", Platform::as_str), rearmed, "service meeting platform set");
    Ok(Json(ServiceMeetingView {
        platform: platform.map(|p| p.as_str().to_string()),
        settings,
        is_online: service.is_online,
        rearmed: Some(rearmed),
    }))
}
