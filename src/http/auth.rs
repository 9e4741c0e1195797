//! Who is calling: the app's bearer JWT, verified, and the caller's role.
//!
//! The app signs `Authorization: Bearer <JWT>` (HS256 with `http.jwt_secret`, or RS256/ES256 with
//! `http.jwt_public_key_file`); `sub` is `users.id` and `exp` is enforced. Only the configured
//! algorithm is accepted, so `alg=none` and algorithm swaps fail. Tokens are never logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::config::HttpConfig;

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl JwtVerifier {
    /// The verifier the configuration describes; `None` when no key is configured.
    pub fn from_config(http: &HttpConfig) -> Result<Option<JwtVerifier>, String> {
        let (algorithm, key) = match http.jwt_algorithm.as_str() {
            "HS256" => match http.jwt_secret()? {
                None => return Ok(None),
                Some(secret) => (Algorithm::HS256, DecodingKey::from_secret(secret.expose_secret().as_bytes())),
            },
            alg @ ("RS256" | "ES256") => {
                if http.jwt_public_key_file.as_os_str().is_empty() {
                    return Ok(None);
                }
                let pem = std::fs::read(&http.jwt_public_key_file)
                    .map_err(|e| format!("http.jwt_public_key_file {}: {e}", http.jwt_public_key_file.display()))?;
                let key = if alg == "RS256" { DecodingKey::from_rsa_pem(&pem) } else { DecodingKey::from_ec_pem(&pem) }
                    .map_err(|e| format!("http.jwt_public_key_file is not a {alg} public key in PEM: {e}"))?;
                (if alg == "RS256" { Algorithm::RS256 } else { Algorithm::ES256 }, key)
            }
            other => return Err(format!("http.jwt_algorithm {other:?} is not supported")),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 30;
        validation.validate_aud = false;
        Ok(Some(JwtVerifier { key, validation }))
    }

    /// The user id in a valid token.
    pub fn verify(&self, token: &str) -> Result<Uuid, String> {
        let data = decode::<Claims>(token, &self.key, &self.validation).map_err(|e| e.to_string())?;
        data.claims.sub.parse().map_err(|_| "sub is not a user id".to_string())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
    /// `users.role = 'provider'` or owns a service.
    pub is_provider: bool,
}

impl Caller {
    pub fn require_provider(&self) -> Result<(), ApiError> {
        if self.is_provider { Ok(()) } else { Err(ApiError::forbidden("only providers manage meeting integrations")) }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("an Authorization: Bearer token is required"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::unauthenticated("the Authorization header must be a Bearer token"))?;
        let user_id = state.jwt.verify(token.trim()).map_err(|why| {
            tracing::debug!(reason = %why, "rejected bearer token");
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is invalid or expired",
            )
        })?;
        let client = state.pool.get().await?;
        let is_provider = crate::db::users::is_provider(client.sql(), user_id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the token's user does not exist"))?;
        Ok(Caller { user_id, is_provider })
    }
}
