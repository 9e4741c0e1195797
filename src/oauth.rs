//! OAuth 2.0 calls (the `oauth2` crate) for every platform: the consent-screen URL, the code
//! and refresh grants, revocation.
//!
//! Generic: each platform's endpoints, scopes and extra parameters come from its `OAuthSpec`
//! (`providers::auth`). Owns the grants and how their failures are classified. It never touches the database and
//! never logs a token: callers get tokens as `SecretString` and errors without response bodies.

use std::time::Duration;

use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The `oauth2` client with [`TokenEndpointError`] as its error answer.
type Client<HasAuthUrl = EndpointNotSet, HasTokenUrl = EndpointNotSet> = oauth2::Client<
    TokenEndpointError,
    BasicTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    HasAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    HasTokenUrl,
>;

/// A token endpoint's error answer, as the platforms send it: RFC 6749 §5.2's `error` (which
/// Zoom sometimes leaves out), Zoom's numeric `code`, and the Microsoft identity platform's
/// `error_codes`. Every field is optional, so any JSON object is read; a body that is not JSON
/// is a parse failure. `error_description` is kept out: it is free text that can echo the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TokenEndpointError {
    #[serde(default)]
    pub error: Option<String>,
    /// Zoom's error code (4735: the refresh token is invalid, 4741: the token was revoked).
    #[serde(default)]
    pub code: Option<i64>,
    /// The Microsoft identity platform's AADSTS numbers.
    #[serde(default)]
    pub error_codes: Vec<i64>,
}

impl std::fmt::Display for TokenEndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.error.as_deref().unwrap_or("an error"))?;
        if let Some(code) = self.code {
            write!(f, " (code {code})")?;
        }
        if !self.error_codes.is_empty() {
            let codes: Vec<String> = self.error_codes.iter().map(i64::to_string).collect();
            write!(f, " (AADSTS{})", codes.join(", AADSTS"))?;
        }
        Ok(())
    }
}

impl oauth2::ErrorResponse for TokenEndpointError {}

/// Zoom's codes for a refresh token that is dead: 4735 (invalid, e.g. rotated away, or its owner
/// gone) and 4741 (revoked).
const ZOOM_DEAD_TOKEN_CODES: [i64; 2] = [4735, 4741];

impl TokenEndpointError {
    /// What the answer means for the grant, by its `error` and codes (never by free text).
    fn classify(&self) -> OAuthError {
        match self.error.as_deref() {
            // The grant is gone, or only the user can renew it (OpenID Connect's two).
            Some("invalid_grant" | "interaction_required" | "consent_required") => OAuthError::Revoked,
            _ if self.code.is_some_and(|c| ZOOM_DEAD_TOKEN_CODES.contains(&c)) => OAuthError::Revoked,
            Some(e @ ("invalid_client" | "unauthorized_client")) => OAuthError::Client(e.to_string()),
            _ => OAuthError::Transient(format!("token endpoint answered {self}")),
        }
    }
}

/// One platform's OAuth client.
#[derive(Clone)]
pub struct OAuthClient {
    client_id: String,
    client_secret: SecretString,
    token_url: url::Url,
    /// How the client authenticates at the token endpoint: in the form body (Google) or with
    /// HTTP Basic (Zoom, which accepts nothing else).
    auth_type: AuthType,
    http: reqwest::Client,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url.as_str())
            .finish()
    }
}

/// Fresh tokens from the token endpoint.
pub struct Refreshed {
    pub access_token: SecretString,
    /// Present when the platform rotates refresh tokens (the old one is then dead).
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<Duration>,
    /// The answer's `scope` field, split on spaces; `None` when the answer has none (see
    /// [`Refreshed::granted_scopes`]).
    pub scopes: Option<Vec<String>>,
}

impl Refreshed {
    /// The scopes this answer grants: its `scope` field, or, when the answer has none, the ones
    /// `requested` (RFC 6749 §5.1: the field may be left out only when it equals the request).
    pub fn granted_scopes(&self, requested: &[&str]) -> Vec<String> {
        match &self.scopes {
            Some(granted) => granted.iter().filter(|s| !s.is_empty()).cloned().collect(),
            None => requested.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// `invalid_grant`: the user revoked access or the refresh token expired. Never retried.
    #[error("the platform rejected the refresh token (invalid_grant): the provider must reconnect")]
    Revoked,
    /// The platform refused our client (wrong id/secret, disabled client): an operator must act.
    #[error("the platform refused meetingd's OAuth client ({0}): check the client id and secret")]
    Client(String),
    /// Network trouble or a server error at the token endpoint.
    #[error("token endpoint unavailable: {0}")]
    Transient(String),
}

/// A consent-screen URL and the PKCE verifier to keep for the callback.
pub struct Authorization {
    pub url: url::Url,
    pub pkce_verifier: SecretString,
}

fn classify<RE: std::error::Error + 'static>(e: RequestTokenError<RE, TokenEndpointError>) -> OAuthError {
    match e {
        RequestTokenError::ServerResponse(r) => r.classify(),
        RequestTokenError::Request(e) => OAuthError::Transient(e.to_string()),
        // The body is not quoted: it could hold a token.
        RequestTokenError::Parse(_, _) => OAuthError::Transient("unreadable token endpoint response".into()),
        RequestTokenError::Other(m) => OAuthError::Transient(m),
    }
}

fn tokens(response: &BasicTokenResponse) -> Refreshed {
    Refreshed {
        access_token: SecretString::from(response.access_token().secret().to_string()),
        refresh_token: response.refresh_token().map(|t| SecretString::from(t.secret().to_string())),
        expires_in: response.expires_in(),
        scopes: response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect()),
    }
}

impl OAuthClient {
    /// The consent-screen URL (authorization-code flow with PKCE S256) for `scopes`, with the
    /// platform's own `extra_params` (in order) after them.
    pub fn authorize(
        &self,
        auth_url: &url::Url,
        redirect_url: &url::Url,
        scopes: &[&str],
        extra_params: &[(&str, &str)],
        state: &str,
    ) -> Authorization {
        let client = Client::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(AuthUrl::from_url(auth_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_url.clone()));
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let mut request = client.authorize_url(move || CsrfToken::new(state));
        for scope in scopes {
            request = request.add_scope(Scope::new(scope.to_string()));
        }
        for (name, value) in extra_params {
            request = request.add_extra_param(*name, *value);
        }
        let (url, _) = request.set_pkce_challenge(challenge).url();
        Authorization { url, pkce_verifier: SecretString::from(verifier.secret().to_string()) }
    }

    /// The authorization-code grant with the PKCE verifier (RFC 6749 §4.1.3, RFC 7636).
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &SecretString,
        redirect_url: &url::Url,
    ) -> Result<Refreshed, OAuthError> {
        let client = Client::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_string()))
            .set_auth_type(self.auth_type.clone())
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()))
            .set_redirect_uri(RedirectUrl::from_url(redirect_url.clone()));
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.expose_secret().to_string()))
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        Ok(tokens(&response))
    }

    /// Revokes a token at the platform (RFC 7009 style `token=` form post). Best effort: the
    /// caller wipes its copy whatever this answers.
    pub async fn revoke(&self, revoke_url: &url::Url, token: &SecretString) -> Result<(), OAuthError> {
        let mut request = self.http.post(revoke_url.clone()).form(&[("token", token.expose_secret())]);
        if matches!(self.auth_type, AuthType::BasicAuth) {
            // A platform that authenticates its clients with HTTP Basic (Zoom) does so here too.
            request = request.basic_auth(&self.client_id, Some(self.client_secret.expose_secret()));
        }
        let response = request.send().await.map_err(|e| OAuthError::Transient(e.without_url().to_string()))?;
        match response.status() {
            s if s.is_success() => Ok(()),
            // Already invalid: nothing left to revoke.
            s if s.as_u16() == 400 => Ok(()),
            s => Err(OAuthError::Transient(format!("revocation endpoint answered {s}"))),
        }
    }

    pub fn new(client_id: &str, client_secret: SecretString, token_url: url::Url, timeout: Duration) -> OAuthClient {
        let http = reqwest::Client::builder()
            // A token endpoint never redirects; following one could leak the client secret.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .expect("a reqwest client with rustls builds");
        OAuthClient {
            client_id: client_id.to_string(),
            client_secret,
            token_url,
            auth_type: AuthType::RequestBody,
            http,
        }
    }

    /// The same client, authenticating at the token endpoint with HTTP Basic
    /// (`Authorization: Basic base64(client_id:client_secret)`) instead of the form body.
    pub fn with_basic_auth(mut self) -> OAuthClient {
        self.auth_type = AuthType::BasicAuth;
        self
    }

    /// The refresh grant (RFC 6749 §6).
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<Refreshed, OAuthError> {
        let client = Client::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.expose_secret().to_string()))
            .set_auth_type(self.auth_type.clone())
            .set_token_uri(TokenUrl::from_url(self.token_url.clone()));
        let token = RefreshToken::new(refresh_token.expose_secret().to_string());
        let response = client.exchange_refresh_token(&token).request_async(&self.http).await.map_err(classify)?;
        Ok(tokens(&response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(scopes: Option<&[&str]>) -> Refreshed {
        Refreshed {
            access_token: SecretString::from("a"),
            refresh_token: None,
            expires_in: None,
            scopes: scopes.map(|s| s.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn answered(body: &str) -> OAuthError {
        serde_json::from_str::<TokenEndpointError>(body).expect("any JSON object is an error answer").classify()
    }

    #[test]
    fn token_endpoint_errors_are_classified_by_error_and_code() {
        // Zoom's dead refresh token, with and without an `error`.
        assert!(matches!(answered(r#"{"reason":"Invalid Token!","error":"invalid_grant"}"#), OAuthError::Revoked));
        assert!(matches!(answered(r#"{"code":4735,"message":"Invalid refresh token."}"#), OAuthError::Revoked));
        assert!(matches!(answered(r#"{"code":4741,"message":"Token has been revoked."}"#), OAuthError::Revoked));
        assert!(matches!(
            answered(r#"{"error":"invalid_request","code":4741,"reason":"Token has been revoked."}"#),
            OAuthError::Revoked
        ));
        // The Microsoft identity platform: the error, not the AADSTS text, decides.
        assert!(matches!(
            answered(r#"{"error":"interaction_required","error_codes":[50076],"error_description":"AADSTS50076: …"}"#),
            OAuthError::Revoked
        ));
        assert!(matches!(answered(r#"{"error":"invalid_client","error_codes":[7000215]}"#), OAuthError::Client(_)));
        match answered(r#"{"error":"temporarily_unavailable","error_codes":[50196],"error_description":"secret"}"#) {
            OAuthError::Transient(m) => {
                assert!(m.contains("temporarily_unavailable") && m.contains("AADSTS50196"), "{m}");
                assert!(!m.contains("secret"), "the free-text description is never quoted: {m}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(answered("{}"), OAuthError::Transient(_)));
    }

    #[test]
    fn granted_scopes_are_the_answers_or_else_the_request() {
        let asked = ["https://www.googleapis.com/auth/calendar.events"];
        assert_eq!(answer(None).granted_scopes(&asked), asked);
        assert_eq!(answer(Some(&["openid", "email"])).granted_scopes(&asked), ["openid", "email"]);
        assert!(answer(Some(&[""])).granted_scopes(&asked).is_empty(), "an empty scope grants nothing");
        assert!(answer(Some(&[])).granted_scopes(&asked).is_empty());
    }
}
