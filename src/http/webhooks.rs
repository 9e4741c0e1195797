//! Notifications a platform sends meetingd: Zoom's webhook, `POST /api/webhooks/zoom`.
//!
//! Zoom calls it, not the app, so there is no bearer token: every request must carry Zoom's
//! signature (`x-zm-signature` = `v0=` + hex HMAC-SHA256 of `v0:{x-zm-request-timestamp}:{raw
//! body}` under the app's Secret Token, compared in constant time) and a timestamp within five
//! minutes. It answers Zoom's endpoint URL validation and acts on App Deauthorized (a Marketplace
//! requirement: the account's tokens are deleted); every other event is acknowledged and ignored.
//! Zoom retries any answer but a 2xx, so a notification meetingd understood is always answered 200.
//!
//! Without a Zoom client and a webhook secret token the route answers 404, as an unknown one.
//! Nothing here logs a request body or the secret token; statements are `db::integrations`'.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::config::ZoomConfig;
use crate::db::audit::{insert_audit, insert_event};
use crate::db::integrations;
use crate::job::{AuditEntry, Event};
use crate::providers::Platform;

/// The header carrying the request's time (Unix epoch seconds) that the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-zm-request-timestamp";
/// The header carrying `v0=` + the hex signature.
pub const SIGNATURE_HEADER: &str = "x-zm-signature";

/// How far a request's timestamp may be from meetingd's clock, either way (replays older than
/// this are refused).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// Who the audit rows of a notification name.
const ACTOR: &str = "zoom-webhook";

/// Zoom's webhook secret token, once Zoom is configured and the token is set.
pub struct ZoomWebhook {
    secret: SecretString,
}

impl std::fmt::Debug for ZoomWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoomWebhook").finish_non_exhaustive()
    }
}

/// Why a request was not taken as Zoom's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {TIMESTAMP_HEADER} header is not a Unix time")]
    BadTimestamp,
    #[error("the request's timestamp is more than five minutes from meetingd's clock")]
    Stale,
    #[error("the signature does not match")]
    BadSignature,
}

impl ZoomWebhook {
    pub fn new(secret: SecretString) -> ZoomWebhook {
        ZoomWebhook { secret }
    }

    /// The webhook `[zoom]` enables: `None` without a Zoom OAuth client or a webhook secret token.
    pub fn from_config(config: &ZoomConfig) -> Result<Option<ZoomWebhook>, String> {
        if !config.is_configured() {
            return Ok(None);
        }
        Ok(config.webhook_secret_token()?.map(ZoomWebhook::new))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes()).expect("HMAC accepts any key length")
    }

    /// Checks that Zoom signed `body` at `timestamp` and that `timestamp` is within
    /// [`MAX_SKEW`] of `now`.
    pub fn verify(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        let timestamp = timestamp.ok_or(Refused::Missing(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(Refused::Missing(SIGNATURE_HEADER))?;
        let sent = sent_at(timestamp)?;
        let expected = signature.strip_prefix("v0=").and_then(|h| hex::decode(h).ok()).ok_or(Refused::BadSignature)?;
        let mut mac = self.mac();
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac.verify_slice(&expected).map_err(|_| Refused::BadSignature)?;
        if (now.timestamp() - sent).unsigned_abs() > MAX_SKEW.as_secs() {
            return Err(Refused::Stale);
        }
        Ok(())
    }

    /// The answer to a URL validation: hex HMAC-SHA256 of `plain_token` under the secret token.
    pub fn encrypted_token(&self, plain_token: &str) -> String {
        let mut mac = self.mac();
        mac.update(plain_token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The request's time in Unix seconds. Zoom sends seconds; a value that can only be
/// milliseconds (after the year 33658 as seconds) is read as milliseconds.
fn sent_at(timestamp: &str) -> Result<i64, Refused> {
    let value: i64 = timestamp.trim().parse().map_err(|_| Refused::BadTimestamp)?;
    Ok(if value > 1_000_000_000_000 { value / 1000 } else { value })
}

/// Any notification: its event name and payload.
#[derive(Deserialize)]
struct Notification {
    event: String,
    #[serde(default)]
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct UrlValidation {
    #[serde(rename = "plainToken")]
    plain_token: String,
}

/// App Deauthorized's payload, as far as meetingd reads it.
#[derive(Deserialize)]
struct Deauthorization {
    /// The Zoom user who removed the app: an integration's `platform_user_id`.
    user_id: String,
    /// When they removed it (ISO 8601). A connection made after that (they added the app
    /// again before a late or repeated delivery arrived) is not wiped.
    #[serde(default)]
    deauthorization_time: Option<String>,
}

/// The answer to Zoom's endpoint URL validation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UrlValidationResponse {
    /// The `plainToken` Zoom sent.
    #[serde(rename = "plainToken")]
    pub plain_token: String,
    /// Hex HMAC-SHA256 of `plainToken` under the webhook secret token.
    #[serde(rename = "encryptedToken")]
    pub encrypted_token: String,
}

/// Zoom's notifications: endpoint URL validation and App Deauthorized.
#[utoipa::path(
    post, path = "/api/webhooks/zoom", tag = "webhooks",
    params(
        ("x-zm-request-timestamp" = String, Header, description = "Unix time (seconds) of the request; at most five minutes from meetingd's clock"),
        ("x-zm-signature" = String, Header, description = "`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}` under the app's Secret Token")
    ),
    request_body(content = String, content_type = "application/json", description = "Zoom's notification: `{\"event\", \"event_ts\", \"payload\"}`"),
    responses(
        (status = 200, description = "`endpoint.url_validation`: the token answered. Any other event: acknowledged (`app_deauthorized`: the Zoom account's tokens are wiped, its provider told to reconnect and its upcoming Zoom bookings moved to the fallback platform)", body = UrlValidationResponse),
        (status = 400, description = "Signed, but not a notification meetingd can read", body = ErrorBody),
        (status = 401, description = "Not signed by Zoom with the configured secret token, or older than five minutes", body = ErrorBody),
        (status = 404, description = "Zoom or its webhook secret token is not configured", body = ErrorBody)
    )
)]
pub async fn zoom(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let Some(hook) = state.zoom_webhook.as_deref() else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(refused) = hook.verify(header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), &body, Utc::now()) {
        tracing::warn!(reason = %refused, bytes = body.len(), "Zoom webhook request refused");
        return Err(ApiError::unauthenticated("the request is not signed by Zoom"));
    }
    let unreadable = || ApiError::bad_request("invalid_json", "the body is not a Zoom notification");
    let notification: Notification = serde_json::from_slice(&body).map_err(|_| unreadable())?;
    match notification.event.as_str() {
        "endpoint.url_validation" => {
            let UrlValidation { plain_token } =
                serde_json::from_value(notification.payload).map_err(|_| unreadable())?;
            tracing::info!("Zoom validated the webhook endpoint");
            let encrypted_token = hook.encrypted_token(&plain_token);
            Ok(Json(UrlValidationResponse { plain_token, encrypted_token }).into_response())
        }
        "app_deauthorized" => {
            let Deauthorization { user_id, deauthorization_time } =
                serde_json::from_value(notification.payload).map_err(|_| unreadable())?;
            let at = deauthorization_time.as_deref().and_then(|t| t.parse::<DateTime<Utc>>().ok());
            deauthorize(&state, &user_id, at).await?;
            Ok(StatusCode::OK.into_response())
        }
        other => {
            tracing::debug!(event = other, "Zoom notification ignored");
            Ok(StatusCode::OK.into_response())
        }
    }
}

/// In one transaction: the Zoom account's integration rows and retired copies made inactive
/// with their tokens wiped, the provider told to reconnect, audit rows, and the provider's
/// upcoming Zoom bookings re-armed so the worker moves them to the fallback platform.
async fn deauthorize(state: &AppState, zoom_user: &str, at: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    let platform = Platform::Zoom;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let done = integrations::deauthorize(tx.sql(), platform.as_str(), zoom_user, at).await?;
    if done.integrations.is_empty() && done.retired.is_empty() {
        drop(tx);
        tracing::info!(zoom_user, "Zoom app deauthorized by an account with no active integration: nothing to do");
        return Ok(());
    }
    let message = format!(
        "{} access was revoked or has expired. Reconnect {} under Integrations; until then bookings get the fallback meeting platform.",
        platform.display_name(),
        platform.display_name()
    );
    for &user in &done.integrations {
        let event = Event {
            kind: "integration_needs_reconnect",
            platform: Some(platform.as_str().into()),
            message: message.clone(),
        };
        insert_event(tx.sql(), &event, Some(user), None).await?;
        let entry = deauthorized("the app was removed in Zoom: tokens wiped");
        insert_audit(tx.sql(), ACTOR, None, Some(user), None, &entry).await?;
    }
    // A retired copy is an account its provider already left: nothing to reconnect, but Zoom
    // requires its tokens gone too.
    let mut former: Vec<Uuid> = done.retired.iter().copied().filter(|u| !done.integrations.contains(u)).collect();
    former.sort_unstable();
    former.dedup();
    for user in former {
        let entry = deauthorized("the app was removed in Zoom: the tokens of a former account wiped");
        insert_audit(tx.sql(), ACTOR, None, Some(user), None, &entry).await?;
    }
    let rearmed = if done.integrations.is_empty() {
        0
    } else {
        integrations::rearm_meetings_of(tx.sql(), &done.integrations, platform.as_str()).await?
    };
    tx.commit().await?;
    tracing::warn!(
        zoom_user,
        integrations = done.integrations.len(),
        retired_copies = done.retired.len(),
        bookings_rearmed = rearmed,
        "Zoom app deauthorized: tokens wiped; the provider must reconnect Zoom"
    );
    Ok(())
}

fn deauthorized(detail: &str) -> AuditEntry {
    AuditEntry {
        action: "integration.deauthorize",
        platform: Some(Platform::Zoom.as_str().into()),
        outcome: "ok",
        duration_ms: None,
        detail: Some(detail.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wh-secret-token";
    const BODY: &str = r#"{"event":"app_deauthorized","payload":{"user_id":"hostAbc123"}}"#;
    // printf 'v0:1700000000:%s' "$BODY" | openssl dgst -sha256 -hmac wh-secret-token
    const SIGNATURE: &str = "v0=c4fdec42aab20708519781b81738836c72c26c745c23dc8de1a6979428d70681";
    // printf '%s' abc123 | openssl dgst -sha256 -hmac wh-secret-token
    const ENCRYPTED_ABC123: &str = "9dc895ee8c0ebfd2a67c48d1d8d58f339988c8eaa8917d380d597e032dad678d";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn hook() -> ZoomWebhook {
        ZoomWebhook::new(SecretString::from(SECRET))
    }

    #[test]
    fn a_signature_computed_with_openssl_verifies() {
        assert_eq!(hook().verify(Some("1700000000"), Some(SIGNATURE), BODY.as_bytes(), at(1_700_000_100)), Ok(()));
    }

    #[test]
    fn the_url_validation_answer_matches_openssl() {
        assert_eq!(hook().encrypted_token("abc123"), ENCRYPTED_ABC123);
    }

    #[test]
    fn anything_else_is_refused() {
        let h = hook();
        let now = at(1_700_000_000);
        let body = BODY.as_bytes();
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| h.verify(ts, sig, body, now);
        assert_eq!(check(None, Some(SIGNATURE), body, now), Err(Refused::Missing(TIMESTAMP_HEADER)));
        assert_eq!(check(Some("1700000000"), None, body, now), Err(Refused::Missing(SIGNATURE_HEADER)));
        assert_eq!(check(Some("soon"), Some(SIGNATURE), body, now), Err(Refused::BadTimestamp));
        // Another body, timestamp, secret, prefix or encoding.
        let other_body = BODY.replace("hostAbc123", "hostAbc124");
        assert_eq!(check(Some("1700000000"), Some(SIGNATURE), other_body.as_bytes(), now), Err(Refused::BadSignature));
        assert_eq!(check(Some("1700000001"), Some(SIGNATURE), body, now), Err(Refused::BadSignature));
        let other = ZoomWebhook::new(SecretString::from("another-secret"));
        assert_eq!(other.verify(Some("1700000000"), Some(SIGNATURE), body, now), Err(Refused::BadSignature));
        let bare = SIGNATURE.strip_prefix("v0=").unwrap();
        assert_eq!(check(Some("1700000000"), Some(bare), body, now), Err(Refused::BadSignature));
        assert_eq!(check(Some("1700000000"), Some(&format!("v1={bare}")), body, now), Err(Refused::BadSignature));
        assert_eq!(check(Some("1700000000"), Some("v0=zz"), body, now), Err(Refused::BadSignature));
        assert_eq!(
            check(Some("1700000000"), Some(&SIGNATURE[..SIGNATURE.len() - 2]), body, now),
            Err(Refused::BadSignature)
        );
    }

    #[test]
    fn the_timestamp_must_be_within_five_minutes_either_way() {
        let h = hook();
        let body = BODY.as_bytes();
        for now in [1_700_000_000 - 300, 1_700_000_000, 1_700_000_000 + 300] {
            assert_eq!(h.verify(Some("1700000000"), Some(SIGNATURE), body, at(now)), Ok(()), "{now}");
        }
        for now in [1_700_000_000 - 301, 1_700_000_000 + 301, 1_700_000_000 + 360] {
            assert_eq!(h.verify(Some("1700000000"), Some(SIGNATURE), body, at(now)), Err(Refused::Stale), "{now}");
        }
    }

    #[test]
    fn a_millisecond_timestamp_is_read_as_milliseconds() {
        assert_eq!(sent_at("1700000000"), Ok(1_700_000_000));
        assert_eq!(sent_at("1700000000123"), Ok(1_700_000_000));
        assert_eq!(sent_at(""), Err(Refused::BadTimestamp));
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        assert!(!format!("{:?}", hook()).contains(SECRET));
    }
}
