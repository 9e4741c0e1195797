//! The platforms this deployment offers, as a platform selector needs them: `GET /api/platforms`.
//!
//! One answer per platform meetingd can make meetings on (its provider is configured), in a fixed
//! order: its names, whether the caller has connected it and how that connection stands, where to
//! connect it, the meeting options it honours, and whether it is the fallback. It names no
//! platform: the facts come from `providers` (`Providers`, `auth::spec`); the caller's connections
//! are `db::integrations`'.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::integrations::ConnectionStatus;
use crate::config::Fallback;
use crate::db::integrations;
use crate::providers::{Platform, auth};

#[derive(Serialize, ToSchema)]
pub struct PlatformView {
    /// The stored name (`services.meeting_platform`): `google_meet`, `zoom`, `teams`, `jitsi`.
    #[schema(example = "zoom")]
    pub platform: String,
    #[schema(example = "Zoom")]
    pub display_name: String,
    /// Whether a provider must connect an account before its meetings are made there.
    pub needs_account: bool,
    /// Whether the caller has connected it (a platform without accounts: always `true`).
    pub connected: bool,
    /// The caller's connection: `active`, `expiring` (it works, but ends at `reconnect_by`),
    /// or `needs_reconnect` after the platform refused it; `null` when not connected or when
    /// the platform needs no account.
    pub status: Option<ConnectionStatus>,
    /// When an `expiring` connection stops working unless reconnected; `null` otherwise.
    pub reconnect_by: Option<DateTime<Utc>>,
    /// Where the provider's browser starts connecting it (`POST`), for platforms with accounts.
    #[schema(example = "/api/auth/zoom/connect")]
    pub connect_path: Option<String>,
    /// The meeting options (`services.meeting_settings` keys) it honours; the others are ignored
    /// there, and reported.
    #[schema(example = json!(["waiting_room", "recording", "passcode", "mute_on_entry"]))]
    pub options: Vec<String>,
    /// Whether bookings of services asking for an unusable platform get this one.
    pub fallback: bool,
}

/// The platforms this deployment offers, and the caller's connection to each.
#[utoipa::path(
    get, path = "/api/platforms", tag = "integrations",
    responses(
        (status = 200, body = [PlatformView], example = json!([
            {"platform": "zoom", "display_name": "Zoom", "needs_account": true, "connected": true, "status": "active",
             "reconnect_by": null, "connect_path": "/api/auth/zoom/connect",
             "options": ["waiting_room", "recording", "passcode", "mute_on_entry"], "fallback": false},
            {"platform": "jitsi", "display_name": "Jitsi Meet", "needs_account": false, "connected": true, "status": null,
             "reconnect_by": null, "connect_path": null, "options": [], "fallback": true}
        ])),
        (status = 401, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<PlatformView>>, ApiError> {
    let connected = if caller.is_provider {
        let client = state.pool.get().await?;
        integrations::of_user(client.sql(), caller.user_id, &state.lifetimes()).await?
    } else {
        Vec::new()
    };
    let fallback = match state.config.fallback.platform {
        Fallback::Platform(p) => Some(p),
        Fallback::None => None,
    };
    let views = Platform::ALL
        .into_iter()
        .filter_map(|platform| {
            let provider = state.offered(platform)?;
            let spec = auth::spec(platform);
            // A connection the provider removed (or the platform deauthorized) holds no token:
            // not connected, rather than waiting for a reconnect.
            let mine = connected.iter().find(|c| c.platform == platform.as_str() && c.has_token);
            Some(PlatformView {
                platform: platform.as_str().into(),
                display_name: platform.display_name().into(),
                needs_account: platform.needs_account(),
                connected: !platform.needs_account() || mine.is_some_and(|c| c.active),
                status: mine.map(ConnectionStatus::of),
                reconnect_by: mine.and_then(ConnectionStatus::reconnect_by),
                connect_path: spec.map(|s| format!("/api/auth/{}/connect", s.path_segment)),
                options: provider.supported_options().iter().map(|o| o.as_str().to_string()).collect(),
                fallback: fallback == Some(platform),
            })
        })
        .collect();
    Ok(Json(views))
}
