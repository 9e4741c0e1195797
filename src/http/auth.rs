//! Who is calling: the app's bearer JWT, verified, and the caller's role.
//!
//! The app (or its auth service) signs `Authorization: Bearer <JWT>`: HS256 with `http.jwt_secret`
//! (at least 32 bytes), RS256/ES256 with `http.jwt_public_key_file`, or with a key of the JWKS at
//! `http.jwt_jwks_url` (`auth/jwks.rs`) in one of `http.jwt_algorithms`. The user id is the
//! `http.jwt_user_claim` claim (`sub`); `exp` is enforced and `nbf` honoured, both with
//! [`LEEWAY_SECS`]; `aud` and `iss` must match `http.jwt_audience` / `http.jwt_issuer` when those
//! are set. Only the configured algorithms are accepted, so `alg=none` and algorithm swaps fail.
//! It must not log a token, nor accept one whose keys it could not check (that is a 503, never a
//! pass).

mod jwks;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use secrecy::ExposeSecret;
use uuid::Uuid;

pub use self::jwks::{Clock, JWKS_REFETCH_INTERVAL, SystemClock};
use super::AppState;
use super::error::ApiError;
use crate::config::HttpConfig;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Why a bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a valid token for meetingd (answered 401); the reason is for the debug log only.
    #[error("{0}")]
    Invalid(String),
    /// No key set has been fetched from `http.jwt_jwks_url` yet, so nothing can be verified
    /// (answered 503).
    #[error("the signing keys at http.jwt_jwks_url could not be fetched yet")]
    KeysUnavailable,
}

pub struct JwtVerifier {
    keys: Keys,
    /// One per accepted algorithm: jsonwebtoken checks a key against every algorithm of a
    /// `Validation`, so RSA and EC keys cannot share one.
    validations: Vec<Validation>,
    user_claim: String,
}

enum Keys {
    /// One key from the configuration (HS256 secret or a PEM public key).
    Static(DecodingKey),
    /// The auth service's published keys, picked by `kid`.
    Jwks(Box<jwks::JwksKeys>),
}

impl JwtVerifier {
    /// The verifier the configuration describes; `None` when no key is configured. Makes no
    /// network call: a JWKS is fetched when the first token needs it.
    pub fn from_config(http: &HttpConfig) -> Result<Option<JwtVerifier>, String> {
        let user_claim = http.jwt_user_claim.trim().to_string();
        if user_claim.is_empty() {
            return Err("http.jwt_user_claim must name the claim that holds users.id (usually \"sub\")".into());
        }
        if let Some(url) = http.jwt_jwks_url()? {
            let algorithms = http.jwt_jwks_algorithms()?;
            let keys = jwks::JwksKeys::new(url, algorithms.clone())?;
            let validations = algorithms.iter().map(|a| validation(http, *a)).collect();
            return Ok(Some(JwtVerifier { keys: Keys::Jwks(Box::new(keys)), validations, user_claim }));
        }
        let (algorithm, key) = match http.jwt_algorithm.as_str() {
            "HS256" => match http.jwt_secret()? {
                None => return Ok(None),
                Some(secret) => {
                    if let Some(sentence) = http.jwt_secret_too_short() {
                        return Err(sentence);
                    }
                    (Algorithm::HS256, DecodingKey::from_secret(secret.expose_secret().as_bytes()))
                }
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
        Ok(Some(JwtVerifier { keys: Keys::Static(key), validations: vec![validation(http, algorithm)], user_claim }))
    }

    /// The same verifier reading time from `clock` for its JWKS cache (tests step it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> JwtVerifier {
        if let Keys::Jwks(keys) = &mut self.keys {
            keys.set_clock(clock);
        }
        self
    }

    /// Where the keys come from, for `meetingd check` and the start-up log.
    pub fn describe(&self) -> String {
        let algorithms: Vec<String> =
            self.validations.iter().flat_map(|v| &v.algorithms).map(|a| format!("{a:?}")).collect();
        match &self.keys {
            Keys::Static(_) => format!("{} bearer tokens", algorithms.join(", ")),
            Keys::Jwks(keys) => format!("{} bearer tokens, keys from {}", algorithms.join(", "), keys.url()),
        }
    }

    /// For `meetingd check`: fetches the JWKS now and counts the keys meetingd may use (`None`
    /// when the key comes from the configuration).
    pub async fn probe(&self) -> Option<Result<usize, String>> {
        match &self.keys {
            Keys::Static(_) => None,
            Keys::Jwks(keys) => Some(keys.probe().await),
        }
    }

    /// The user id in a valid token, fetching the JWKS when the token needs it (at most one
    /// fetch per call, shared with concurrent calls).
    pub async fn authenticate(&self, token: &str) -> Result<Uuid, TokenError> {
        match &self.keys {
            Keys::Static(key) => self.check(token, key, &self.validations[0]),
            Keys::Jwks(keys) => {
                let (kid, validation) = self.key_id(token)?;
                let key = keys.key(&kid, validation.algorithms[0]).await?;
                self.check(token, key.decoding(), validation)
            }
        }
    }

    /// The user id in a valid token, with the keys at hand (a JWKS verifier uses its cache and
    /// never fetches here).
    pub fn verify(&self, token: &str) -> Result<Uuid, String> {
        self.verify_cached(token).map_err(|e| e.to_string())
    }

    fn verify_cached(&self, token: &str) -> Result<Uuid, TokenError> {
        match &self.keys {
            Keys::Static(key) => self.check(token, key, &self.validations[0]),
            Keys::Jwks(keys) => {
                let (kid, validation) = self.key_id(token)?;
                let key = keys.cached(&kid, validation.algorithms[0])?;
                self.check(token, key.decoding(), validation)
            }
        }
    }

    /// The `kid` of a token's header and the validation of its `alg`, refused before any key
    /// lookup when the algorithm is not configured.
    fn key_id(&self, token: &str) -> Result<(String, &Validation), TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let validation = self
            .validations
            .iter()
            .find(|v| v.algorithms.contains(&header.alg))
            .ok_or_else(|| TokenError::Invalid(format!("algorithm {:?} is not accepted", header.alg)))?;
        let kid = header.kid.ok_or_else(|| TokenError::Invalid("the token names no key (kid)".into()))?;
        Ok((kid, validation))
    }

    fn check(&self, token: &str, key: &DecodingKey, validation: &Validation) -> Result<Uuid, TokenError> {
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, key, validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let user = data.claims.get(&self.user_claim).and_then(serde_json::Value::as_str);
        user.and_then(|u| u.parse().ok())
            .ok_or_else(|| TokenError::Invalid(format!("claim {} is not a user id", self.user_claim)))
    }
}

/// What every token signed with `algorithm` must satisfy besides its signature.
fn validation(http: &HttpConfig, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    let audience = http.jwt_audience.trim();
    validation.validate_aud = !audience.is_empty();
    if !audience.is_empty() {
        validation.set_audience(&[audience]);
        required.push("aud");
    }
    let issuer = http.jwt_issuer.trim();
    if !issuer.is_empty() {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
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
        let user_id = state.jwt.authenticate(token.trim()).await.map_err(|e| match e {
            TokenError::Invalid(why) => {
                tracing::debug!(reason = %why, "rejected bearer token");
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the bearer token is invalid or expired")
            }
            TokenError::KeysUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "the keys that verify bearer tokens cannot be fetched right now; try again shortly",
            ),
        })?;
        let client = state.pool.get().await?;
        let is_provider = crate::db::users::is_provider(client.sql(), user_id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the token's user does not exist"))?;
        Ok(Caller { user_id, is_provider })
    }
}
