//! The caller's connected platform accounts: list and disconnect. Never a token.
//!
//! Platform-neutral: revocation goes to the platform's endpoint from `providers::auth`; the
//! statements are `db::integrations`'.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::connect::path_platform;
use super::error::{ApiError, ErrorBody};
use crate::crypto::Column;
use crate::db::integrations;

/// How a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// It works.
    Active,
    /// It works, but its grant ends soon (at `reconnect_by`): the provider should reconnect
    /// before then (a Google app in testing; a Microsoft or Zoom connection meetingd could not renew).
    Expiring,
    /// The platform refused it (revoked, expired): the provider must reconnect.
    NeedsReconnect,
}

impl ConnectionStatus {
    pub fn of(summary: &integrations::Summary) -> ConnectionStatus {
        match (summary.active, summary.expiring) {
            (false, _) => ConnectionStatus::NeedsReconnect,
            (true, true) => ConnectionStatus::Expiring,
            (true, false) => ConnectionStatus::Active,
        }
    }

    /// When an expiring connection stops working.
    pub fn reconnect_by(summary: &integrations::Summary) -> Option<DateTime<Utc>> {
        summary.ends_at.filter(|_| ConnectionStatus::of(summary) == ConnectionStatus::Expiring)
    }
}

#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    /// `google_meet`, `zoom`, `teams`.
    #[schema(example = "zoom")]
    pub platform: String,
    /// The connected account's e-mail address, when known.
    #[schema(example = "dana@example.com")]
    pub account_email: Option<String>,
    pub status: ConnectionStatus,
    /// When an `expiring` connection stops working unless reconnected; `null` otherwise.
    pub reconnect_by: Option<DateTime<Utc>>,
    pub connected_since: Option<DateTime<Utc>>,
}

/// The caller's integrations.
#[utoipa::path(
    get, path = "/api/integrations", tag = "integrations",
    responses(
        (status = 200, body = [IntegrationView], example = json!([
            {"platform": "zoom", "account_email": "dana@example.com", "status": "active", "reconnect_by": null,
             "connected_since": "2026-11-02T09:30:00Z"},
            {"platform": "teams", "account_email": "dana@contoso.example", "status": "expiring",
             "reconnect_by": "2026-12-20T08:00:00Z", "connected_since": "2026-08-24T08:00:00Z"}
        ])),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<IntegrationView>>, ApiError> {
    caller.require_provider()?;
    let client = state.pool.get().await?;
    let rows = integrations::of_user(client.sql(), caller.user_id, &state.lifetimes()).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| IntegrationView {
                status: ConnectionStatus::of(&r),
                reconnect_by: ConnectionStatus::reconnect_by(&r),
                platform: r.platform,
                account_email: r.email,
                connected_since: r.created_at,
            })
            .collect(),
    ))
}

/// Disconnects a platform: revokes the token at the platform (best effort) and wipes it here.
#[utoipa::path(
    delete, path = "/api/integrations/{platform}", tag = "integrations",
    params(("platform" = String, Path, description = "`google_meet` (or `google-meet`), `zoom` or `teams`")),
    responses((status = 204, description = "Disconnected"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(segment): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_provider()?;
    let platform = path_platform(&segment)?.platform;
    let client = state.pool.get().await?;
    let row = integrations::load(client.sql(), caller.user_id, platform.as_str(), false)
        .await?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    // No connection is held while the platform answers.
    drop(client);
    // Revoking the refresh token ends the whole grant (at Google and Zoom); fall back to the access token.
    let stored = row.refresh_token.as_deref().filter(|t| !t.is_empty()).map(|t| (t, Column::RefreshToken(row.owner())));
    let stored =
        stored.or(Some((row.access_token.as_str(), Column::AccessToken(row.owner()))).filter(|(t, _)| !t.is_empty()));
    let connector = state.connectors.get(platform);
    let revoke = connector.and_then(|c| Some((c.client(), c.revoke_url()?)));
    if let (Some((ciphertext, column)), Some((oauth, revoke_url))) = (stored, revoke) {
        match state.keyring.decrypt(ciphertext, row.id, column) {
            Ok(token) if !token.expose_secret().is_empty() => {
                if let Err(e) = oauth.revoke(revoke_url, &token).await {
                    tracing::warn!(user_id = %caller.user_id, platform = %platform, error = %e, "revocation at the platform failed; tokens wiped anyway");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user_id = %caller.user_id, error = %e, "stored token unreadable; wiped without revoking")
            }
        }
    }
    let mut client = state.pool.get().await?;
    crate::admin::disable_integration(
        client.transaction().await?,
        &format!("user:{}", caller.user_id),
        caller.user_id,
        platform,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
