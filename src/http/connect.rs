//! Connecting a platform account: the OAuth authorization-code flow with PKCE.
//!
//! `connect` (authenticated provider) stores a single-use state server-side (its hash, the user,
//! the encrypted PKCE verifier, 10 minutes) and sets it in an HTTP-only cookie
//! (`__Host-meetingd_oauth_state` when `http.cookie_secure` is on); `callback` (the browser
//! coming back from the consent screen) requires the cookie to match the query's state before it
//! consumes that stored state, exchanges the code, checks that the granted scopes include the
//! platform's required ones (`?error=insufficient_scope` otherwise, nothing stored), stores the
//! tokens encrypted, re-queues the provider's failed bookings and redirects to the app — never
//! anywhere but `http.app_url`.
//!
//! Platform-neutral: each platform's OAuth facts (path segment, scopes, endpoints, who the
//! connected account is) come from `providers::auth`; the statements from `db::oauth_states`,
//! `db::requeue` and `admin::store_integration`.

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
use crate::db::oauth_states;
use crate::db::requeue::{self, Failed};
use crate::providers::Platform;
use crate::providers::auth::{OAuthSpec, PathPlatform};

/// The state cookie's name when `http.cookie_secure` is off (plain-http development).
pub const STATE_COOKIE: &str = "meetingd_oauth_state";
/// Its name when `http.cookie_secure` is on: the `__Host-` prefix makes browsers take it only
/// with `Secure`, `Path=/` and no `Domain`, so a sibling subdomain cannot plant one.
pub const SECURE_STATE_COOKIE: &str = "__Host-meetingd_oauth_state";
const STATE_TTL_SECS: i64 = 600;

/// The state cookie's name under this configuration.
pub fn state_cookie_name(secure: bool) -> &'static str {
    if secure { SECURE_STATE_COOKIE } else { STATE_COOKIE }
}

/// The state cookie (or, with an empty value, the template of its removal): HTTP-only,
/// `SameSite=Lax` (the consent screen comes back with a top-level GET), `Path=/`, no `Domain`,
/// `Secure` and `__Host-`-named when `secure`.
fn state_cookie(secure: bool, value: String) -> Cookie<'static> {
    Cookie::build((state_cookie_name(secure), value))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .path("/")
        .build()
}

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

/// The platform a path segment names (`google-meet`, `zoom` or `teams`, or its stored name), with its
/// OAuth facts; 404 for anything meetingd cannot connect.
pub fn path_platform(segment: &str) -> Result<&'static OAuthSpec, ApiError> {
    match PathPlatform::parse(segment) {
        PathPlatform::Connectable(spec) => Ok(spec),
        PathPlatform::NotYet => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "platform_unavailable",
            format!("{segment} cannot be connected on this server yet"),
        )),
        PathPlatform::Unknown => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_platform", format!("unknown platform {segment:?}")))
        }
    }
}

fn state_hash(state: &str) -> String {
    Sha256::digest(state.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn callback_url(state: &AppState, spec: &OAuthSpec) -> url::Url {
    let segment = spec.path_segment;
    state.config.http.public_url.join(&format!("/api/auth/{segment}/callback")).expect("a path joins onto an http URL")
}

/// Starts connecting a platform account.
#[utoipa::path(
    post, path = "/api/auth/{platform}/connect", tag = "integrations",
    params(("platform" = String, Path, description = "`google-meet`, `zoom` or `teams` (each when its OAuth client is configured)")),
    responses(
        (status = 200, description = "Send the browser to the consent screen; the state cookie is set", body = ConnectResponse,
            example = json!({"authorization_url": "https://zoom.us/oauth/authorize?response_type=code&client_id=AbCdEf123&state=q4mX2yJc9kP0sVn7tLw3uA8bZ1rE6fHd5gKi&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&redirect_uri=https%3A%2F%2Fmeetingd.example.com%2Fapi%2Fauth%2Fzoom%2Fcallback"})),
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
    let spec = path_platform(&segment)?;
    let connector = state.connectors.get(spec.platform).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            format!("{} is not configured on this server", spec.vendor),
        )
    })?;
    let raw: [u8; 32] = rand::random();
    let oauth_state = URL_SAFE_NO_PAD.encode(raw);
    let redirect = callback_url(&state, spec);
    let authorization = connector.authorize(&redirect, &oauth_state);

    let client = state.pool.get().await?;
    oauth_states::delete_expired(client.sql()).await?;
    let row_id = Uuid::new_v4();
    let verifier = state.keyring.encrypt(&authorization.pkce_verifier, row_id, Column::PkceVerifier);
    let pending = oauth_states::NewState {
        state_hash: &state_hash(&oauth_state),
        id: row_id,
        user_id: caller.user_id,
        platform: spec.platform.as_str(),
        pkce_verifier: &verifier,
        ttl_secs: STATE_TTL_SECS as f64,
    };
    oauth_states::insert(client.sql(), &pending).await?;
    let mut cookie = state_cookie(state.config.http.cookie_secure, oauth_state);
    cookie.set_max_age(time::Duration::seconds(STATE_TTL_SECS));
    Ok((jar.add(cookie), Json(ConnectResponse { authorization_url: authorization.url.to_string() })))
}

/// Where the consent screen sends the provider back.
#[utoipa::path(
    get, path = "/api/auth/{platform}/callback", tag = "integrations",
    params(("platform" = String, Path, description = "`google-meet`, `zoom` or `teams`"), CallbackQuery),
    responses((status = 303, description = "Redirect to http.app_url + /dashboard/integrations?connected=… or ?error=… (invalid_state, state_expired, access_denied, missing_code, exchange_failed, account_unknown: the platform did not say which account it is, nothing stored, insufficient_scope: a required scope was not granted, nothing stored; personal_account_unsupported: a personal Microsoft account, which cannot hold Teams meetings, nothing stored)"))
)]
pub async fn callback(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    Query(query): Query<CallbackQuery>,
    jar: CookieJar,
) -> Response {
    let secure = state.config.http.cookie_secure;
    let outcome = finish_connect(&state, &segment, &query, &jar).await;
    let mut target = state.config.http.app_url.join("/dashboard/integrations").expect("app_url is an http URL");
    match &outcome {
        Ok(platform) => target.query_pairs_mut().append_pair("connected", platform.as_str()),
        Err(refusal) => target.query_pairs_mut().append_pair("error", &refusal.code),
    };
    // A cookie that did not match is left alone: it may be this browser's for another state
    // (a second tab), still pending.
    let keep = matches!(&outcome, Err(refusal) if !refusal.state_taken);
    let jar = if keep { jar } else { jar.remove(state_cookie(secure, String::new())) };
    (jar, Redirect::to(target.as_str())).into_response()
}

/// Why a callback did not connect: the error code put in the redirect, and whether the stored
/// state was consumed on the way (then the browser's cookie goes too).
#[derive(Debug)]
struct Refusal {
    code: String,
    state_taken: bool,
}

impl From<&str> for Refusal {
    fn from(code: &str) -> Refusal {
        Refusal { code: code.to_string(), state_taken: true }
    }
}

impl From<String> for Refusal {
    fn from(code: String) -> Refusal {
        Refusal { code, state_taken: true }
    }
}

impl Refusal {
    /// Refused before the stored state was looked at: it stays usable.
    fn untaken(code: &str) -> Refusal {
        Refusal { code: code.to_string(), state_taken: false }
    }
}

/// The callback's work; `Err` says what to put in the redirect.
async fn finish_connect(
    state: &AppState,
    segment: &str,
    query: &CallbackQuery,
    jar: &CookieJar,
) -> Result<Platform, Refusal> {
    let spec = path_platform(segment).map_err(|_| Refusal::untaken("unknown_platform"))?;
    let platform = spec.platform;
    let oauth_state =
        query.state.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| Refusal::untaken("invalid_state"))?;
    // The browser that started the connection must be the one coming back: a state without its
    // cookie (a link sent to someone else, a cookie planted for another state) is refused and left
    // usable, so it cannot be burnt for the right browser.
    let cookie = jar.get(state_cookie_name(state.config.http.cookie_secure)).map(|c| c.value());
    if !cookie.is_some_and(|c| same_secret(c, oauth_state)) {
        tracing::warn!(platform = %platform, "OAuth callback without the matching state cookie; refused");
        return Err(Refusal::untaken("invalid_state"));
    }
    // Single use: the row is consumed by the first callback that presents the state with its
    // cookie, whatever happens next.
    let client = state.pool.get().await.map_err(|e| internal(e.to_string()))?;
    let pending = oauth_states::take(client.sql(), &state_hash(oauth_state), platform.as_str())
        .await
        .map_err(|e| internal(e.to_string()))?
        .ok_or("invalid_state")?;
    // No connection is held while the platform answers: API traffic cannot tie up the pool.
    drop(client);
    let user_id = pending.user_id;
    if !pending.fresh {
        return Err("state_expired".into());
    }
    if let Some(error) = &query.error {
        let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(40).collect();
        tracing::info!(user_id = %user_id, platform = %platform, error = %code, "provider declined the connection");
        return Err(if code.is_empty() { "access_denied".into() } else { code.into() });
    }
    let code = query.code.as_deref().filter(|c| !c.is_empty()).ok_or("missing_code")?;
    let connector = state.connectors.get(platform).ok_or("not_configured")?;
    let verifier = state
        .keyring
        .decrypt(&pending.pkce_verifier, pending.id, Column::PkceVerifier)
        .map_err(|e| internal(e.to_string()))?;
    let tokens = connector.client().exchange_code(code, &verifier, &callback_url(state, spec)).await.map_err(|e| {
        tracing::warn!(user_id = %user_id, platform = %platform, error = %e, "OAuth code exchange failed");
        "exchange_failed".to_string()
    })?;
    // A consent screen lets the user untick scopes: without the ones meetingd needs, every
    // meeting would fail later. Nothing is stored; the provider is told now.
    let granted = tokens.granted_scopes(spec.scopes);
    let missing = spec.missing_scopes(&granted);
    if !missing.is_empty() {
        tracing::warn!(user_id = %user_id, platform = %platform, missing = ?missing, "the connection lacks required scopes; not stored");
        return Err("insufficient_scope".into());
    }
    if tokens.refresh_token.is_none() {
        tracing::warn!(user_id = %user_id, "{} issued no refresh token; the connection will need renewing when the access token expires", spec.vendor);
    }
    // Which account this is decides where its meetings are acted on, whether a later connection
    // is another account, and what a platform's deauthorization names: without it nothing is
    // stored, and the provider is asked to try again.
    let identity = connector.identity(&tokens.access_token).await.map_err(|e| {
        tracing::warn!(user_id = %user_id, platform = %platform, error = %e, "could not learn which account was connected; not stored");
        "account_unknown".to_string()
    })?;
    if let Some(code) = connector.refusal(&identity) {
        tracing::warn!(user_id = %user_id, platform = %platform, refusal = code, "this kind of account cannot be used; not stored");
        return Err(code.into());
    }
    let expires_at = tokens.expires_in.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| chrono::Utc::now() + d);
    let new = crate::admin::NewIntegration {
        user_id,
        platform,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at,
        scopes: granted,
        platform_user_id: identity.platform_user_id,
        email: identity.email,
    };
    let mut client = state.pool.get().await.map_err(|e| internal(e.to_string()))?;
    let tx = client.transaction().await.map_err(|e| internal(e.to_string()))?;
    crate::admin::store_integration(tx.sql(), &state.keyring, &format!("user:{user_id}"), &new)
        .await
        .map_err(|e| internal(e.to_string()))?;
    tx.commit().await.map_err(|e| internal(e.to_string()))?;
    let requeued = requeue::requeue_failed(client.sql(), Failed::OfProvider(user_id))
        .await
        .map_err(|e| internal(e.to_string()))?;
    tracing::info!(user_id = %user_id, platform = %platform, requeued, "provider connected {}", platform.display_name());
    Ok(platform)
}

fn internal(e: String) -> Refusal {
    tracing::error!(error = %e, "OAuth callback failed");
    "internal".into()
}

/// Whether the cookie holds the query's state, compared in constant time.
fn same_secret(cookie: &str, query: &str) -> bool {
    // Equal digests mean equal strings; comparing digests hides where the strings differ.
    let (a, b) = (Sha256::digest(cookie.as_bytes()), Sha256::digest(query.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
