//! The auth service's published signing keys (`http.jwt_jwks_url`): fetched, cached, rotated.
//!
//! Owns the key-set cache: keys by `kid`, kept as long as the server's `Cache-Control: max-age`
//! says (within [`MIN_CACHE`]..[`MAX_CACHE`]), fetched again when a token names a `kid` the set
//! lacks, at most once every [`JWKS_REFETCH_INTERVAL`] whatever the traffic, with one fetch in
//! flight that concurrent requests wait for instead of making their own. When a fetch fails, the
//! keys fetched before stay in use. It must not accept a symmetric (`oct`) key, a key for
//! encryption, or a key whose own `alg` is not configured; nor make a request wait for more than
//! one fetch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderValue};

use super::TokenError;

/// The shortest time between two fetches, however many tokens name unknown keys.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds on how long a fetched set counts as fresh, whatever `max-age` says.
pub const MIN_CACHE: Duration = Duration::from_secs(60);
pub const MAX_CACHE: Duration = Duration::from_secs(3600);
/// Freshness of a set served without `max-age`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(600);
/// One fetch, connection included, never holds a request longer than this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set is a few kilobytes; anything much larger is not one.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Where the cache reads the time (tests step theirs by hand).
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// One usable verification key.
pub struct Key {
    decoding: DecodingKey,
    /// The key's own `alg`, when the set states it: then only that algorithm may use it.
    algorithm: Option<Algorithm>,
}

impl Key {
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answered more than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the answer is not a JWKS: {0}")]
    NotJwks(#[from] serde_json::Error),
    #[error("the JWKS holds no signing key meetingd may use (kid, a public key, an algorithm of http.jwt_algorithms)")]
    NoUsableKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Key>>,
    /// A fetch has succeeded at least once.
    fetched: bool,
    fresh_until: Option<Instant>,
    /// When the last fetch (successful or not) ended.
    last_attempt: Option<Instant>,
    /// Fetches ended so far: a request that waited for the fetch lock sees whether one ran.
    attempts: u64,
}

enum Lookup {
    Use(Arc<Key>),
    Fetch,
    /// The set is known and lacks the key (401).
    Unknown,
    /// No set was ever fetched (503).
    Unavailable,
}

impl Cache {
    fn may_fetch(&self, now: Instant) -> bool {
        self.last_attempt.is_none_or(|t| now.saturating_duration_since(t) >= JWKS_REFETCH_INTERVAL)
    }

    fn lookup(&self, kid: &str, now: Instant) -> Lookup {
        let fresh = self.fresh_until.is_some_and(|until| now < until);
        match self.keys.get(kid) {
            Some(key) if fresh || !self.may_fetch(now) => Lookup::Use(key.clone()),
            _ if self.may_fetch(now) => Lookup::Fetch,
            _ => self.settled(kid),
        }
    }

    /// The answer without fetching: a stale key is still used; an unknown key is refused only
    /// when there is a set to know it from.
    fn settled(&self, kid: &str) -> Lookup {
        match self.keys.get(kid) {
            Some(key) => Lookup::Use(key.clone()),
            None if self.fetched => Lookup::Unknown,
            None => Lookup::Unavailable,
        }
    }
}

pub struct JwksKeys {
    url: url::Url,
    http: reqwest::Client,
    algorithms: Vec<Algorithm>,
    clock: Arc<dyn Clock>,
    cache: Mutex<Cache>,
    /// Held for the duration of a fetch: one in flight.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksKeys {
    pub fn new(url: url::Url, algorithms: Vec<Algorithm>) -> Result<JwksKeys, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            // An https key set is never taken from a plain-http redirect.
            .https_only(url.scheme() == "https")
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("meetingd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for http.jwt_jwks_url: {e}"))?;
        Ok(JwksKeys {
            url,
            http,
            algorithms,
            clock: Arc::new(SystemClock),
            cache: Mutex::default(),
            fetching: Default::default(),
        })
    }

    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panicking reader could break half-way.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key `kid` for a token signed with `algorithm`, fetching the set at most once.
    pub async fn key(&self, kid: &str, algorithm: Algorithm) -> Result<Arc<Key>, TokenError> {
        let (seen, lookup) = {
            let cache = self.cache();
            (cache.attempts, cache.lookup(kid, self.clock.now()))
        };
        let lookup = match lookup {
            Lookup::Fetch => self.fetch_once(kid, seen).await,
            other => other,
        };
        fits(kid, lookup, algorithm)
    }

    /// Fetches the set once, outside the cache: how many keys meetingd may use, or why none.
    pub async fn probe(&self) -> Result<usize, String> {
        self.fetch().await.map(|(keys, _)| keys.len()).map_err(|e| format!("{}: {e}", self.url))
    }

    /// The key `kid` from the cache alone.
    pub fn cached(&self, kid: &str, algorithm: Algorithm) -> Result<Arc<Key>, TokenError> {
        fits(kid, self.cache().settled(kid), algorithm)
    }

    /// Fetches unless another request's fetch ended while this one waited for its turn.
    async fn fetch_once(&self, kid: &str, seen: u64) -> Lookup {
        let _one_in_flight = self.fetching.lock().await;
        {
            let cache = self.cache();
            if cache.attempts != seen {
                return cache.settled(kid);
            }
        }
        let fetched = self.fetch().await;
        let now = self.clock.now();
        let mut cache = self.cache();
        cache.attempts += 1;
        cache.last_attempt = Some(now);
        match fetched {
            Ok((keys, lifetime)) => {
                tracing::debug!(url = %self.url, keys = keys.len(), fresh_secs = lifetime.as_secs(), "fetched the JWKS");
                cache.keys = keys;
                cache.fetched = true;
                cache.fresh_until = Some(now + lifetime);
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWKS; the keys fetched before stay in use");
            }
        }
        cache.settled(kid)
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<Key>>, Duration), FetchError> {
        let mut response =
            self.http.get(self.url.clone()).header(ACCEPT, "application/jwk-set+json, application/json").send().await?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let lifetime = cache_lifetime(response.headers().get(CACHE_CONTROL));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let keys = self.usable_keys(&body)?;
        if keys.is_empty() {
            return Err(FetchError::NoUsableKey);
        }
        Ok((keys, lifetime))
    }

    /// The set's signature keys meetingd may use, by `kid`; other entries are skipped, so one
    /// odd key (a new type, an encryption key) does not make the whole set unusable.
    fn usable_keys(&self, body: &[u8]) -> Result<HashMap<String, Arc<Key>>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(body)?;
        let mut keys = HashMap::new();
        for entry in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry) else { continue };
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
                continue;
            }
            // A shared secret has no business in a published set: never verify with one.
            if !matches!(
                jwk.algorithm,
                AlgorithmParameters::RSA(_)
                    | AlgorithmParameters::EllipticCurve(_)
                    | AlgorithmParameters::OctetKeyPair(_)
            ) {
                continue;
            }
            let algorithm = match jwk.common.key_algorithm.map(Algorithm::try_from) {
                None => None,
                Some(Ok(a)) if self.algorithms.contains(&a) => Some(a),
                Some(_) => continue,
            };
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else { continue };
            keys.insert(kid, Arc::new(Key { decoding, algorithm }));
        }
        Ok(keys)
    }
}

/// The key of a lookup, if the token's algorithm may use it.
fn fits(kid: &str, lookup: Lookup, algorithm: Algorithm) -> Result<Arc<Key>, TokenError> {
    match lookup {
        Lookup::Use(key) if key.algorithm.is_none_or(|a| a == algorithm) => Ok(key),
        Lookup::Use(_) => Err(TokenError::Invalid(format!("key {kid} is not for {algorithm:?}"))),
        Lookup::Unknown | Lookup::Fetch => Err(TokenError::Invalid(format!("no key {kid} in the JWKS"))),
        Lookup::Unavailable => Err(TokenError::KeysUnavailable),
    }
}

/// How long a fetched set stays fresh: its `max-age` (`no-cache`/`no-store`: the minimum),
/// within [`MIN_CACHE`]..[`MAX_CACHE`].
pub fn cache_lifetime(header: Option<&HeaderValue>) -> Duration {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else { return DEFAULT_CACHE };
    let mut lifetime = DEFAULT_CACHE;
    for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-cache" || directive == "no-store" {
            return MIN_CACHE;
        }
        if let Some(secs) = directive.strip_prefix("max-age=") {
            match secs.trim_matches('"').parse::<u64>() {
                Ok(secs) => lifetime = Duration::from_secs(secs),
                Err(_) => return MIN_CACHE,
            }
        }
    }
    lifetime.clamp(MIN_CACHE, MAX_CACHE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifetime(value: &str) -> u64 {
        cache_lifetime(Some(&HeaderValue::from_str(value).unwrap())).as_secs()
    }

    #[test]
    fn cache_control_sets_the_lifetime_within_bounds() {
        assert_eq!(cache_lifetime(None).as_secs(), 600);
        assert_eq!(lifetime("public, max-age=900, must-revalidate"), 900);
        assert_eq!(lifetime("max-age=0"), 60, "floor");
        assert_eq!(lifetime("Max-Age=86400"), 3600, "ceiling");
        assert_eq!(lifetime("no-store"), 60);
        assert_eq!(lifetime("public, max-age=abc"), 60, "an unreadable max-age is the shortest");
        assert_eq!(lifetime("public"), 600);
    }
}
