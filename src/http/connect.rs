//! Connecting a platform account: the OAuth authorization-code flow with PKCE.
//!
//! `connect` (authenticated provider) stores a single-use state server-side (its hash, the user,
//! the encrypted PKCE verifier, 10 minutes) and sets it in an HTTP-only cookie; `callback` (the
//! browser coming back from the consent screen) requires cookie and query to match that stored
//! state, exchanges the code, stores the tokens encrypted, re-queues the provider's failed
//! bookings and redirects to the app — never anywhere but `http.app_url`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use crate::crypto::Column;
use crate::providers::Platform;

pub const STATE_COOKIE: &str = "meetingd_oauth_state";
const STATE_TTL_SECS: i64 = 600;
pub const GOOGLE_SCOPES: [&str; 1] = ["https://www.googleapis.com/auth/calendar.events"];

#[derive(Serialize, ToSchema)]
pub struct ConnectResponse {
    /// Send the provider's browser here (the platform's consent screen).
    pub authorization_url: String,
}

#[derive(Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the platform when the provider declined.
    pub error: Option<String>,
}

/// `google-meet` in paths; the platform names elsewhere.
pub fn path_platform(segment: &str) -> Result<Platform, ApiError> {
    match segment {
        "google-meet" | "google_meet" => Ok(Platform::GoogleMeet),
        "zoom" | "teams" => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "platform_unavailable",
            format!("{segment} cannot be connected on this server yet"),
        )),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_platform", format!("unknown platform {segment:?}"))),
    }
}

fn state_hash(state: &str) -> String {
    Sha256::digest(state.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn callback_url(state: &AppState, platform: Platform) -> url::Url {
    let segment = match platform {
        Platform::GoogleMeet => "google-meet",
        other => other.as_str(),
    };
    state.config.http.public_url.join(&format!("/api/auth/{segment}/callback")).expect("a path joins onto an http URL")
}

/// Starts connecting a platform account.
#[utoipa::path(
    post, path = "/api/auth/{platform}/connect", tag = "integrations",
    params(("platform" = String, Path, description = "`google-meet` (`zoom` and `teams` later)")),
    responses(
        (status = 200, description = "Send the browser to the consent screen; the state cookie is set", body = ConnectResponse),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, description = "The platform's OAuth client is not configured", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    Path(segment): Path<String>,
    jar: CookieJar,
) -> Result<(CookieJar, Json<ConnectResponse>), ApiError> {
    caller.require_provider()?;
    let platform = path_platform(&segment)?;
    let oauth = state.google_oauth.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", "Google is not configured on this server")
    })?;
    let raw: [u8; 32] = rand::random();
    let oauth_state = URL_SAFE_NO_PAD.encode(raw);
    let redirect = callback_url(&state, platform);
    let authorization = oauth.authorize(&state.config.google.auth_url, &redirect, &GOOGLE_SCOPES, &oauth_state);

    let client = state.pool.get().await?;
    client.sql().execute("DELETE FROM meetingd.oauth_states WHERE expires_at < now()", &[]).await?;
    let row_id = Uuid::new_v4();
    let verifier = state.keyring.encrypt(&authorization.pkce_verifier, row_id, Column::PkceVerifier);
    client
        .sql()
        .execute(
            "INSERT INTO meetingd.oauth_states (state_hash, id, user_id, platform, pkce_verifier, expires_at)
             VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
            &[
                &state_hash(&oauth_state),
                &row_id,
                &caller.user_id,
                &platform.as_str(),
                &verifier,
                &(STATE_TTL_SECS as f64),
            ],
        )
        .await?;
    let cookie = Cookie::build((STATE_COOKIE, oauth_state))
        .http_only(true)
        .secure(state.config.http.cookie_secure)
        .same_site(SameSite::Lax)
        .path("/api/auth")
        .max_age(time::Duration::seconds(STATE_TTL_SECS))
        .build();
    Ok((jar.add(cookie), Json(ConnectResponse { authorization_url: authorization.url.to_string() })))
}

/// Where the consent screen sends the provider back.
#[utoipa::path(
    get, path = "/api/auth/{platform}/callback", tag = "integrations",
    params(("platform" = String, Path, description = "`google-meet`"), CallbackQuery),
    responses((status = 303, description = "Redirect to http.app_url + /dashboard/integrations?connected=… or ?error=…"))
)]
pub async fn callback(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    Query(query): Query<CallbackQuery>,
    jar: CookieJar,
) -> Response {
    let cleared = jar.clone().remove(Cookie::build((STATE_COOKIE, "")).path("/api/auth").build());
    let outcome = finish_connect(&state, &segment, &query, &jar).await;
    let mut target = state.config.http.app_url.join("/dashboard/integrations").expect("app_url is an http URL");
    match &outcome {
        Ok(platform) => target.query_pairs_mut().append_pair("connected", platform.as_str()),
        Err(code) => target.query_pairs_mut().append_pair("error", code),
    };
    (cleared, Redirect::to(target.as_str())).into_response()
}

/// The callback's work; `Err` is the error code put in the redirect.
async fn finish_connect(
    state: &AppState,
    segment: &str,
    query: &CallbackQuery,
    jar: &CookieJar,
) -> Result<Platform, String> {
    let platform = path_platform(segment).map_err(|_| "unknown_platform".to_string())?;
    let oauth_state = query.state.as_deref().filter(|s| !s.is_empty()).ok_or("invalid_state")?;
    // Single use: the row is consumed by the first callback that presents the state, whatever
    // happens next (a state seen without its cookie is burnt too).
    let client = state.pool.get().await.map_err(|e| internal(e.to_string()))?;
    let row = client
        .sql()
        .query_opt(
            "DELETE FROM meetingd.oauth_states WHERE state_hash = $1 AND platform = $2
             RETURNING id, user_id, pkce_verifier, expires_at > now()",
            &[&state_hash(oauth_state), &platform.as_str()],
        )
        .await
        .map_err(|e| internal(e.to_string()))?
        .ok_or("invalid_state")?;
    // No connection is held while Google answers: API traffic cannot tie up the pool.
    drop(client);
    let (row_id, user_id, verifier_ct, fresh): (Uuid, Uuid, String, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if jar.get(STATE_COOKIE).map(|c| c.value()) != Some(oauth_state) {
        tracing::warn!(user_id = %user_id, "OAuth callback without the matching state cookie; state discarded");
        return Err("invalid_state".into());
    }
    if !fresh {
        return Err("state_expired".into());
    }
    if let Some(error) = &query.error {
        let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
        tracing::info!(user_id = %user_id, platform = %platform, error = %code, "provider declined the connection");
        return Err(if code.is_empty() { "access_denied".into() } else { code });
    }
    let code = query.code.as_deref().filter(|c| !c.is_empty()).ok_or("missing_code")?;
    let oauth = state.google_oauth.as_ref().ok_or("not_configured")?;
    let verifier =
        state.keyring.decrypt(&verifier_ct, row_id, Column::PkceVerifier).map_err(|e| internal(e.to_string()))?;
    let tokens = oauth.exchange_code(code, &verifier, &callback_url(state, platform)).await.map_err(|e| {
        tracing::warn!(user_id = %user_id, platform = %platform, error = %e, "OAuth code exchange failed");
        "exchange_failed".to_string()
    })?;
    if tokens.refresh_token.is_none() {
        tracing::warn!(user_id = %user_id, "Google issued no refresh token; the connection will need renewing when the access token expires");
    }
    let email = match crate::providers::google::account_email(&state.config.google, &tokens.access_token).await {
        Ok(email) => Some(email),
        Err(e) => {
            tracing::warn!(user_id = %user_id, error = %e, "could not learn the connected account's e-mail");
            None
        }
    };
    let expires_at = tokens.expires_in.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| chrono::Utc::now() + d);
    let new = crate::admin::NewIntegration {
        user_id,
        platform,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at,
        scopes: tokens.scopes.unwrap_or_else(|| GOOGLE_SCOPES.iter().map(|s| s.to_string()).collect()),
        platform_user_id: None,
        email,
    };
    let mut client = state.pool.get().await.map_err(|e| internal(e.to_string()))?;
    let tx = client.transaction().await.map_err(|e| internal(e.to_string()))?;
    crate::admin::store_integration(tx.sql(), &state.keyring, &format!("user:{user_id}"), &new)
        .await
        .map_err(|e| internal(e.to_string()))?;
    tx.commit().await.map_err(|e| internal(e.to_string()))?;
    let requeued = requeue_failed(client.sql(), user_id).await.map_err(|e| internal(e.to_string()))?;
    tracing::info!(user_id = %user_id, platform = %platform, requeued, "provider connected {}", platform.display_name());
    Ok(platform)
}

/// The provider's bookings whose meeting failed get another try now that an account is connected.
pub async fn requeue_failed(client: crate::db::Sql<'_>, provider: Uuid) -> Result<u64, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE meetingd.jobs j
                SET state = 'pending', run_at = now(), attempts = 0, write_failures = 0, last_error = NULL, updated_at = now()
               FROM bookings b JOIN services s ON s.id = b.service_id
              WHERE j.booking_id = b.id AND s.provider_id = $1 AND j.state = 'failed'",
            &[&provider],
        )
        .await?;
    if n > 0 {
        client.execute("SELECT pg_notify('meetingd', '0')", &[]).await?;
    }
    Ok(n)
}

fn internal(e: String) -> String {
    tracing::error!(error = %e, "OAuth callback failed");
    "internal".into()
}
