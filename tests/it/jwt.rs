//! Bearer tokens: only tokens meant for meetingd (`aud`, `iss`, `nbf`), no guessable HS256
//! secrets, and keys from a JWKS URL (cache, rotation, refetch rate limit, algorithms, outage).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use meetingd::config::{Config, HttpConfig};
use meetingd::http::auth::{Clock, JwtVerifier, TokenError};
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::jwks::{FakeJwks, es256_private_key_pem};
use meetingd_testkit::market;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cli::{meetingd, text};

const AUD: &str = "meetingd";
const ISS: &str = "https://auth.market.example/";
const SECRET: &str = "a-signing-secret-of-at-least-32-bytes-for-tests";

/// A clock the test moves by hand.
struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock { start: Instant::now(), offset: Mutex::new(Duration::ZERO) })
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims of a token meant for meetingd, with `changes` applied (`null` removes a claim).
fn claims(user: Uuid, changes: Value) -> Value {
    let mut c =
        json!({"sub": user.to_string(), "aud": AUD, "iss": ISS, "iat": now(), "nbf": now() - 5, "exp": now() + 600});
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

/// A fresh ES256 signing key and its public JWK under `kid`.
fn es256_key(kid: &str) -> (EncodingKey, Value) {
    let key = EncodingKey::from_ec_pem(es256_private_key_pem().as_bytes()).unwrap();
    (key.clone(), public_jwk(&key, Algorithm::ES256, kid))
}

fn public_jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(jwk).unwrap()
}

fn rs256_fixture_key() -> EncodingKey {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rs256-private.pem");
    EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap()
}

/// `[http]` for keys from `url`, ES256 only, with an audience and an issuer.
fn jwks_http(url: &str) -> HttpConfig {
    let mut http = Config::defaults().http;
    http.jwt_jwks_url = url.to_string();
    http.jwt_algorithms = vec!["ES256".into()];
    http.jwt_audience = AUD.into();
    http.jwt_issuer = ISS.into();
    http
}

fn jwks_verifier(url: &str, clock: &Arc<ManualClock>) -> JwtVerifier {
    let clock: Arc<dyn Clock> = clock.clone();
    JwtVerifier::from_config(&jwks_http(url)).unwrap().expect("a verifier").with_clock(clock)
}

fn is_invalid(r: &Result<Uuid, TokenError>) -> bool {
    matches!(r, Err(TokenError::Invalid(_)))
}

#[test]
fn hs256_secrets_shorter_than_32_bytes_are_refused_by_check_and_at_start_up() {
    let mut config = Config::defaults();
    config.http.jwt_secret = SecretString::from("x".repeat(31));
    let problems = config.problems();
    assert!(
        problems.iter().any(|p| p.contains("http.jwt_secret is 31 bytes long") && p.contains("at least 32")),
        "{problems:#?}"
    );
    let refused = JwtVerifier::from_config(&config.http).err().expect("a short secret is refused");
    assert!(refused.contains("at least 32"), "{refused}");

    config.http.jwt_secret = SecretString::from("x".repeat(32));
    assert!(config.problems().is_empty(), "{:#?}", config.problems());
    assert!(JwtVerifier::from_config(&config.http).unwrap().is_some());
}

#[tokio::test]
async fn the_daemon_refuses_to_start_with_a_short_hs256_secret() {
    let mut config = Config::defaults();
    config.encryption.key = meetingd::crypto::Keyring::generate_key();
    config.http.jwt_secret = SecretString::from("s3cret");
    match meetingd::run(config, CancellationToken::new()).await {
        Err(meetingd::RunError::Config(message)) => assert!(message.contains("at least 32"), "{message}"),
        other => panic!("started or failed otherwise: {other:?}"),
    }
}

#[tokio::test]
async fn check_refuses_a_short_secret_and_warns_while_audience_and_issuer_are_unset() {
    let db = TestDb::migrated().await;
    let api = [("MEETINGD_DATABASE__URL", db.url.as_str()), ("MEETINGD_HTTP__LISTEN", "127.0.0.1:0")];

    let out = meetingd(&["check"], &[api[0], api[1], ("MEETINGD_HTTP__JWT_SECRET", "short")]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL config") && t.contains("http.jwt_secret is 5 bytes long"), "{t}");

    let out = meetingd(&["check"], &[api[0], api[1], ("MEETINGD_HTTP__JWT_SECRET", SECRET)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "warnings do not fail the check: {t}");
    assert!(t.contains("warn http") && t.contains("http.jwt_audience is unset"), "{t}");
    assert!(t.contains("http.jwt_issuer is unset"), "{t}");

    let out = meetingd(
        &["check"],
        &[
            api[0],
            api[1],
            ("MEETINGD_HTTP__JWT_SECRET", SECRET),
            ("MEETINGD_HTTP__JWT_AUDIENCE", AUD),
            ("MEETINGD_HTTP__JWT_ISSUER", ISS),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(!t.contains("warn http"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetches_the_jwks_and_fails_when_it_cannot() {
    let db = TestDb::migrated().await;
    let (_, jwk) = es256_key("k");
    let jwks = FakeJwks::start(vec![jwk]).await;
    let url = jwks.url();
    let envs = [
        ("MEETINGD_DATABASE__URL", db.url.as_str()),
        ("MEETINGD_HTTP__LISTEN", "127.0.0.1:0"),
        ("MEETINGD_HTTP__JWT_JWKS_URL", url.as_str()),
        ("MEETINGD_HTTP__JWT_AUDIENCE", AUD),
        ("MEETINGD_HTTP__JWT_ISSUER", ISS),
    ];
    let run = |envs: Vec<(&'static str, String)>| {
        tokio::task::block_in_place(|| {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let out = meetingd(&["check"], &envs);
            (out.status.code(), text(&out))
        })
    };
    let owned = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        envs.iter().chain(extra).map(|(k, v)| (*k, v.to_string())).collect()
    };

    let (code, t) = run(owned(&[]));
    assert_eq!(code, Some(0), "{t}");
    assert!(t.contains("ok   jwks") && t.contains("1 signing key(s)"), "{t}");

    jwks.fail_with(Some(503));
    let (code, t) = run(owned(&[]));
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("FAIL jwks") && t.contains("503"), "{t}");

    let (code, t) = run(owned(&[("MEETINGD_HTTP__JWT_JWKS_URL", "http://auth.example/.well-known/jwks.json")]));
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("http.jwt_jwks_url must be an https URL"), "{t}");
}

#[test]
fn only_tokens_for_meetingd_from_its_issuer_that_are_already_valid_are_accepted() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let user = Uuid::new_v4();
    let token = |changes: Value| sign(&key, Algorithm::HS256, None, &claims(user, changes));
    let mut http = Config::defaults().http;
    http.jwt_secret = SecretString::from(SECRET);
    http.jwt_audience = AUD.into();
    http.jwt_issuer = ISS.into();
    let verifier = JwtVerifier::from_config(&http).unwrap().unwrap();

    assert_eq!(verifier.verify(&token(json!({}))), Ok(user));
    assert_eq!(verifier.verify(&token(json!({"aud": ["other-api", AUD]}))), Ok(user), "one of several audiences");
    assert_eq!(verifier.verify(&token(json!({"nbf": now() + 10}))), Ok(user), "within the leeway");
    for (what, changes) in [
        ("another audience (an e-mail link)", json!({"aud": "email-confirmation"})),
        ("no audience", json!({"aud": null})),
        ("another issuer", json!({"iss": "https://other.example/"})),
        ("no issuer", json!({"iss": null})),
        ("not valid before an hour from now", json!({"nbf": now() + 3600})),
        ("expired", json!({"exp": now() - 3600})),
    ] {
        assert!(verifier.verify(&token(changes)).is_err(), "{what} is refused");
    }

    // Unset, neither is checked (and `check` warns).
    let mut open = http.clone();
    open.jwt_audience = String::new();
    open.jwt_issuer = String::new();
    let verifier = JwtVerifier::from_config(&open).unwrap().unwrap();
    assert_eq!(verifier.verify(&token(json!({"aud": "anything", "iss": "anyone"}))), Ok(user));
}

#[tokio::test]
async fn jwks_keys_verify_tokens_by_kid_with_audience_issuer_and_nbf_checked() {
    let (key, jwk) = es256_key("key-1");
    let jwks = FakeJwks::start(vec![jwk]).await;
    let clock = ManualClock::new();
    let verifier = jwks_verifier(&jwks.url(), &clock);
    let user = Uuid::new_v4();
    let token = |changes: Value| sign(&key, Algorithm::ES256, Some("key-1"), &claims(user, changes));

    assert_eq!(verifier.authenticate(&token(json!({}))).await.unwrap(), user);
    for (what, changes) in [
        ("wrong aud", json!({"aud": "authenticated-elsewhere"})),
        ("wrong iss", json!({"iss": "https://evil.example/"})),
        ("future nbf", json!({"nbf": now() + 3600})),
        ("expired", json!({"exp": now() - 3600})),
    ] {
        assert!(is_invalid(&verifier.authenticate(&token(changes)).await), "{what} is refused");
    }
    let (other_key, _) = es256_key("key-1");
    let forged = sign(&other_key, Algorithm::ES256, Some("key-1"), &claims(user, json!({})));
    assert!(is_invalid(&verifier.authenticate(&forged).await), "signed with another key under a known kid");
    assert!(
        is_invalid(&verifier.authenticate(&sign(&key, Algorithm::ES256, None, &claims(user, json!({})))).await),
        "a token without kid"
    );
    assert_eq!(jwks.hits(), 1, "one fetch serves every token while the set is fresh");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_an_unknown_kid_at_most_once_every_10_seconds() {
    let (old, old_jwk) = es256_key("2026-11");
    let (new, new_jwk) = es256_key("2026-12");
    let jwks = FakeJwks::start(vec![old_jwk.clone()]).await;
    let clock = ManualClock::new();
    let verifier = jwks_verifier(&jwks.url(), &clock);
    let user = Uuid::new_v4();
    let c = claims(user, json!({}));

    assert_eq!(verifier.authenticate(&sign(&old, Algorithm::ES256, Some("2026-11"), &c)).await.unwrap(), user);
    assert_eq!(jwks.hits(), 1);

    // The auth service rotates: the new key appears in the set and tokens name it.
    jwks.set_keys(vec![old_jwk, new_jwk]);
    let rotated = sign(&new, Algorithm::ES256, Some("2026-12"), &c);
    assert!(is_invalid(&verifier.authenticate(&rotated).await), "within 10 s of the last fetch: no refetch yet");
    for _ in 0..20 {
        let unknown = sign(&new, Algorithm::ES256, Some(&Uuid::new_v4().to_string()), &c);
        assert!(is_invalid(&verifier.authenticate(&unknown).await));
    }
    assert_eq!(jwks.hits(), 1, "unknown kids do not make the daemon hammer the JWKS");

    clock.advance(Duration::from_secs(9));
    assert!(is_invalid(&verifier.authenticate(&rotated).await));
    assert_eq!(jwks.hits(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(verifier.authenticate(&rotated).await.unwrap(), user, "accepted after the refetch");
    assert_eq!(jwks.hits(), 2);

    // Garbage kids after the rotation: one refetch per 10 s, however many requests.
    for round in 0..3 {
        for _ in 0..10 {
            let unknown = sign(&new, Algorithm::ES256, Some("no-such-key"), &c);
            assert!(is_invalid(&verifier.authenticate(&unknown).await));
        }
        assert_eq!(jwks.hits(), 2 + round, "round {round}");
        clock.advance(Duration::from_secs(10));
    }
    assert_eq!(verifier.authenticate(&rotated).await.unwrap(), user, "known keys keep working");
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_requests_share_one_jwks_fetch() {
    let (key, jwk) = es256_key("k");
    let jwks = FakeJwks::start(vec![jwk]).await;
    let clock = ManualClock::new();
    let verifier = Arc::new(jwks_verifier(&jwks.url(), &clock));
    let user = Uuid::new_v4();
    let token = sign(&key, Algorithm::ES256, Some("k"), &claims(user, json!({})));
    // All of them find the cache empty before the first answer arrives (one thread: every
    // task runs up to its first wait before any I/O is read).
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (verifier, token) = (verifier.clone(), token.clone());
            tokio::spawn(async move { verifier.authenticate(&token).await.map_err(|e| e.to_string()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(user));
    }
    assert_eq!(jwks.hits(), 1, "one fetch in flight, shared");
}

#[tokio::test]
async fn the_jwks_is_cached_as_long_as_max_age_says_within_bounds() {
    let (key, jwk) = es256_key("k");
    let jwks = FakeJwks::start(vec![jwk]).await;
    let clock = ManualClock::new();
    let verifier = jwks_verifier(&jwks.url(), &clock);
    let user = Uuid::new_v4();
    let token = sign(&key, Algorithm::ES256, Some("k"), &claims(user, json!({})));

    // max-age honoured: 120 s.
    jwks.set_cache_control(Some("public, max-age=120"));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 1);
    clock.advance(Duration::from_secs(119));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 1, "fresh for 120 s");
    clock.advance(Duration::from_secs(2));
    jwks.set_cache_control(Some("max-age=0"));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2, "refetched once stale");

    // max-age=0 counts as the floor (60 s), not "fetch on every request".
    clock.advance(Duration::from_secs(59));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 2, "floor of 60 s");
    clock.advance(Duration::from_secs(2));
    jwks.set_cache_control(Some("max-age=604800"));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 3);

    // A week's max-age counts as the ceiling (1 h): removed keys are noticed within the hour.
    clock.advance(Duration::from_secs(3599));
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 3);
    clock.advance(Duration::from_secs(2));
    jwks.set_keys(vec![]);
    jwks.set_cache_control(None);
    verifier.authenticate(&token).await.unwrap();
    assert_eq!(jwks.hits(), 4, "refetched after an hour");
}

#[tokio::test]
async fn only_the_configured_algorithms_are_accepted_never_hmac_or_none() {
    let (es, es_jwk) = es256_key("ec");
    let rsa = rs256_fixture_key();
    let rsa_jwk = public_jwk(&rsa, Algorithm::RS256, "rsa");
    let jwks = FakeJwks::start(vec![es_jwk.clone(), rsa_jwk.clone()]).await;
    let clock = ManualClock::new();
    let verifier = jwks_verifier(&jwks.url(), &clock);
    let user = Uuid::new_v4();
    let c = claims(user, json!({}));

    assert_eq!(verifier.authenticate(&sign(&es, Algorithm::ES256, Some("ec"), &c)).await.unwrap(), user);
    let rs256 = sign(&rsa, Algorithm::RS256, Some("rsa"), &c);
    assert!(is_invalid(&verifier.authenticate(&rs256).await), "RS256 is not configured");
    // The classic confusion: HS256 keyed with the published public key.
    let public = serde_json::to_vec(&es_jwk).unwrap();
    let confused = sign(&EncodingKey::from_secret(&public), Algorithm::HS256, Some("ec"), &c);
    assert!(is_invalid(&verifier.authenticate(&confused).await), "HS256 with the public key");
    let header = base64_url(br#"{"alg":"none","typ":"JWT","kid":"ec"}"#);
    let unsigned = format!("{header}.{}.", base64_url(c.to_string().as_bytes()));
    assert!(verifier.authenticate(&unsigned).await.is_err(), "alg none");

    // With RS256 configured too, the RSA key works.
    let mut http = jwks_http(&jwks.url());
    http.jwt_algorithms = vec!["ES256".into(), "RS256".into()];
    let both = JwtVerifier::from_config(&http).unwrap().unwrap();
    assert_eq!(both.authenticate(&rs256).await.unwrap(), user);
    // A key whose own alg is RS256 never verifies a token that claims another algorithm.
    let mismatched = sign(&es, Algorithm::ES256, Some("rsa"), &c);
    assert!(is_invalid(&both.authenticate(&mismatched).await));

    // A shared secret in the set is skipped (and does not spoil the other keys); a token naming
    // it is refused.
    let oct = json!({"kty": "oct", "kid": "hmac", "k": base64_url(SECRET.as_bytes())});
    jwks.set_keys(vec![oct, es_jwk.clone()]);
    clock.advance(Duration::from_secs(3600));
    let hmac = sign(&EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256, Some("hmac"), &c);
    assert!(is_invalid(&verifier.authenticate(&hmac).await));
    assert_eq!(verifier.authenticate(&sign(&es, Algorithm::ES256, Some("ec"), &c)).await.unwrap(), user);

    // The configuration refuses HMAC and none for a JWKS.
    for bad in ["HS256", "none"] {
        let mut http = jwks_http(&jwks.url());
        http.jwt_algorithms = vec!["RS256".into(), bad.into()];
        let error = JwtVerifier::from_config(&http).err().unwrap_or_else(|| panic!("{bad} refused"));
        assert!(error.contains(bad), "{error}");
        let mut config = Config::defaults();
        config.http = http;
        assert!(config.problems().iter().any(|p| p.contains("http.jwt_algorithms")), "{bad}");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_jwks_outage_keeps_the_keys_fetched_before_and_refuses_unknown_kids() {
    let (key, jwk) = es256_key("k");
    let jwks = FakeJwks::start(vec![jwk]).await;
    let clock = ManualClock::new();
    let verifier = jwks_verifier(&jwks.url(), &clock);
    let user = Uuid::new_v4();
    let c = claims(user, json!({}));
    let token = sign(&key, Algorithm::ES256, Some("k"), &c);
    verifier.authenticate(&token).await.unwrap();

    jwks.fail_with(Some(503));
    clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(verifier.authenticate(&token).await.unwrap(), user, "a stale key stays in use while the JWKS is down");
    assert_eq!(jwks.hits(), 2, "it tried");
    let (other, _) = es256_key("new");
    let unknown = sign(&other, Algorithm::ES256, Some("new"), &c);
    clock.advance(Duration::from_secs(10));
    assert!(is_invalid(&verifier.authenticate(&unknown).await), "an unknown kid is a 401, not a 503");
    assert_eq!(jwks.hits(), 3);

    // Before any fetch succeeded nothing can be verified: 503, never a pass.
    let cold = jwks_verifier(&jwks.url(), &clock);
    assert!(matches!(cold.authenticate(&token).await, Err(TokenError::KeysUnavailable)));
    jwks.fail_with(None);
    assert!(matches!(cold.authenticate(&token).await, Err(TokenError::KeysUnavailable)), "rate-limited");
    clock.advance(Duration::from_secs(10));
    assert_eq!(cold.authenticate(&token).await.unwrap(), user, "up again");
}

/// The daemon with its API on `listener`'s address and keys from `jwks`.
async fn daemon_with_jwks(
    db: &TestDb,
    jwks: &FakeJwks,
) -> (String, CancellationToken, tokio::task::JoinHandle<Result<(), meetingd::RunError>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = db.config();
    let keys = jwks_http(&jwks.url());
    config.http.jwt_jwks_url = keys.jwt_jwks_url;
    config.http.jwt_algorithms = keys.jwt_algorithms;
    config.http.jwt_audience = keys.jwt_audience;
    config.http.jwt_issuer = keys.jwt_issuer;
    config.http.public_url = base.parse().unwrap();
    let shutdown = CancellationToken::new();
    let options = meetingd::RunOptions { providers: None, http_listener: Some(listener), ops_listener: None };
    let task = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));
    eventually("the API to answer", Duration::from_secs(20), || async {
        reqwest::get(format!("{base}/api/openapi.json")).await.ok().map(|_| ())
    })
    .await;
    (base, shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_401_for_a_token_not_meant_for_it_and_503_while_no_keys_can_be_fetched() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let provider = market::user(&c, "provider").await;
    let (key, jwk) = es256_key("k");
    let http = reqwest::Client::new();
    let call = |base: String, token: String| {
        let http = http.clone();
        async move {
            let r = http.get(format!("{base}/api/integrations")).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            (status, body["error"]["code"].as_str().unwrap_or("").to_string())
        }
    };

    // The JWKS is down from the start: nothing can be verified yet.
    let down = FakeJwks::start(vec![jwk.clone()]).await;
    down.fail_with(Some(503));
    let (base, shutdown, task) = daemon_with_jwks(&db, &down).await;
    let token = sign(&key, Algorithm::ES256, Some("k"), &claims(provider, json!({})));
    assert_eq!(call(base, token.clone()).await, (503, "auth_unavailable".to_string()));
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let up = FakeJwks::start(vec![jwk]).await;
    let (base, shutdown, task) = daemon_with_jwks(&db, &up).await;
    assert_eq!(call(base.clone(), token).await.0, 200);
    let other_audience = sign(&key, Algorithm::ES256, Some("k"), &claims(provider, json!({"aud": "authenticated"})));
    assert_eq!(call(base.clone(), other_audience).await, (401, "invalid_token".to_string()));
    let other_issuer = sign(&key, Algorithm::ES256, Some("k"), &claims(provider, json!({"iss": "https://elsewhere/"})));
    assert_eq!(call(base, other_issuer).await, (401, "invalid_token".to_string()));
    assert_eq!(up.hits(), 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
