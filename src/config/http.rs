//! The `[http]` section: the API's listeners, its bearer tokens (a secret, a public key or a
//! JWKS URL, the algorithms, audience and issuer), the OAuth state cookie and request limits.
//!
//! Validates itself for `Config::problems` and `meetingd check`; it opens nothing (the JWKS is
//! fetched by `http::auth`).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::secret_or_file;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    pub metrics_listen: String,
    pub public_url: url::Url,
    pub app_url: url::Url,
    pub jwt_algorithm: String,
    pub jwt_secret: SecretString,
    pub jwt_secret_file: PathBuf,
    pub jwt_public_key_file: PathBuf,
    /// `aud` a bearer token must carry ("": not checked; `check` warns).
    pub jwt_audience: String,
    /// `iss` a bearer token must carry ("": not checked; `check` warns).
    pub jwt_issuer: String,
    /// The claim that holds `users.id`.
    pub jwt_user_claim: String,
    /// The auth service's published keys ("": keys from `jwt_secret` / `jwt_public_key_file`).
    pub jwt_jwks_url: String,
    /// The algorithms accepted with keys from `jwt_jwks_url` (asymmetric only).
    pub jwt_algorithms: Vec<String>,
    pub cookie_secure: bool,
    pub body_limit_bytes: usize,
    /// Connections of the API's own pool (apart from the worker's, so API traffic cannot
    /// starve it).
    pub pool_size: usize,
    /// How long a request waits for one of them before it is answered 503.
    pub pool_wait_ms: u64,
    /// Serve the web components' demo page at `/ui/` (the module itself is always served).
    pub ui_demo: bool,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("public_url", &self.public_url.as_str())
            .field("app_url", &self.app_url.as_str())
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_secret", &if self.jwt_secret.expose_secret().is_empty() { "" } else { "***" })
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_user_claim", &self.jwt_user_claim)
            .field("jwt_jwks_url", &self.jwt_jwks_url)
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("cookie_secure", &self.cookie_secure)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("pool_size", &self.pool_size)
            .field("pool_wait_ms", &self.pool_wait_ms)
            .field("ui_demo", &self.ui_demo)
            .finish()
    }
}

impl HttpConfig {
    /// The HMAC secret for HS256, from the inline value or its file.
    pub fn jwt_secret(&self) -> Result<Option<SecretString>, String> {
        secret_or_file(&self.jwt_secret, &self.jwt_secret_file, "http.jwt_secret")
    }
}

/// The shortest HS256 secret accepted: 256 bits, the size of the HMAC (RFC 7518 §3.2). A shorter
/// one can be guessed offline from a single token the app signed.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Bearer-token settings: where the keys come from and what a token must say.
impl HttpConfig {
    /// `jwt_jwks_url`, parsed; `None` when the keys come from `jwt_secret` / `jwt_public_key_file`.
    pub fn jwt_jwks_url(&self) -> Result<Option<url::Url>, String> {
        let raw = self.jwt_jwks_url.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(raw).map_err(|e| format!("http.jwt_jwks_url is not a URL ({e}): {raw:?}"))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme().to_string().as_str() {
            "https" if url.host().is_some() => Ok(Some(url)),
            "http" if loopback => Ok(Some(url)),
            _ => Err(format!(
                "http.jwt_jwks_url must be an https URL (plain http only on a loopback address): whoever can \
                 change the keys on the way can sign tokens for any user; not {raw:?}"
            )),
        }
    }

    /// `jwt_algorithms`, parsed: asymmetric algorithms only, since a JWKS publishes public keys.
    pub fn jwt_jwks_algorithms(&self) -> Result<Vec<jsonwebtoken::Algorithm>, String> {
        if self.jwt_algorithms.is_empty() {
            return Err(
                "http.jwt_algorithms must name the algorithms your auth service signs with, e.g. [\"RS256\"]".into()
            );
        }
        let mut algorithms = Vec::new();
        for name in &self.jwt_algorithms {
            let algorithm = match name.trim() {
                n if n.eq_ignore_ascii_case("none") => {
                    return Err("http.jwt_algorithms must not name \"none\": an unsigned token proves nothing".into());
                }
                n if n.to_ascii_uppercase().starts_with("HS") => {
                    return Err(format!(
                        "http.jwt_algorithms must not name {n}: it lists the algorithms of the keys at \
                         http.jwt_jwks_url, which are public keys; an HMAC secret is http.jwt_secret with \
                         http.jwt_algorithm = \"HS256\""
                    ));
                }
                n => n.parse::<jsonwebtoken::Algorithm>().map_err(|_| {
                    format!("http.jwt_algorithms: {n:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA")
                })?,
            };
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        Ok(algorithms)
    }

    /// The sentence refusing the configured HS256 secret when it is too short to resist an
    /// offline guess; `None` when it is long enough, or not used.
    pub fn jwt_secret_too_short(&self) -> Option<String> {
        if self.jwt_algorithm != "HS256" || !self.jwt_jwks_url.trim().is_empty() {
            return None;
        }
        let secret = self.jwt_secret().ok()??;
        let len = secret.expose_secret().len();
        (len < MIN_JWT_SECRET_BYTES).then(|| {
            format!(
                "http.jwt_secret is {len} bytes long; an HS256 secret must be at least {MIN_JWT_SECRET_BYTES} \
                 random bytes, or anyone holding one token the app signed can guess it offline and sign tokens \
                 for any user (make one with `openssl rand -base64 48`, and give the app the same)"
            )
        })
    }

    /// What makes the bearer-token settings unusable (part of [`Config::problems`]).
    pub(super) fn jwt_problems(&self, problems: &mut Vec<String>) {
        if let Some(sentence) = self.jwt_secret_too_short() {
            problems.push(sentence);
        }
        if let Err(e) = self.jwt_jwks_algorithms() {
            problems.push(e);
        }
        if self.jwt_user_claim.trim().is_empty() {
            problems.push("http.jwt_user_claim must name the claim that holds users.id (usually \"sub\")".into());
        }
        match self.jwt_jwks_url() {
            Err(e) => problems.push(e),
            Ok(Some(_)) => {
                let secret =
                    !self.jwt_secret.expose_secret().trim().is_empty() || !self.jwt_secret_file.as_os_str().is_empty();
                if secret || !self.jwt_public_key_file.as_os_str().is_empty() {
                    problems.push(
                        "http.jwt_jwks_url and http.jwt_secret(_file) / http.jwt_public_key_file are two sources \
                         of keys: set only one"
                            .into(),
                    );
                }
            }
            Ok(None) => {}
        }
    }

    /// Settings that work but leave tokens meant for something else acceptable (`meetingd check`
    /// prints them as warnings).
    pub fn jwt_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.jwt_audience.trim().is_empty() {
            warnings.push(
                "http.jwt_audience is unset, so a token's `aud` is not checked: any token signed with the same \
                 key is a meetingd bearer token, including ones the app or its auth service signs for other \
                 purposes (e-mail links, other services); set it to the `aud` of the tokens meant for \
                 meetingd (Supabase: \"authenticated\", Auth0: the API identifier)"
                    .into(),
            );
        }
        if self.jwt_issuer.trim().is_empty() {
            warnings.push(
                "http.jwt_issuer is unset, so a token's `iss` is not checked: a token another issuer signed with \
                 a key meetingd trusts is accepted; set it to the `iss` of the app's tokens (Supabase: \
                 https://<project>.supabase.co/auth/v1, Auth0: https://<tenant>.auth0.com/)"
                    .into(),
            );
        }
        warnings
    }
}
