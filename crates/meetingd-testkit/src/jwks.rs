//! An in-process JWKS endpoint: an auth service's published signing keys, for the bearer-token
//! tests.
//!
//! It serves the key set a test gives it (RFC 7517 JSON, as Supabase or Auth0 publish it) at
//! `/.well-known/jwks.json` with the `Cache-Control` the test chooses, counts the requests it
//! gets, and can be told to fail; [`es256_private_key_pem`] makes a fresh signing key. It holds
//! no assertion.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    keys: Vec<Value>,
    cache_control: Option<String>,
    /// Answer this status (with no key set) instead of the set.
    failing: Option<u16>,
    hits: usize,
}

#[derive(Clone)]
pub struct FakeJwks {
    pub addr: SocketAddr,
    state: Arc<Mutex<Inner>>,
}

impl FakeJwks {
    /// A server on 127.0.0.1 publishing `keys` (JWK objects).
    pub async fn start(keys: Vec<Value>) -> FakeJwks {
        let state = Arc::new(Mutex::new(Inner { keys, ..Inner::default() }));
        let app = Router::new().route("/.well-known/jwks.json", get(serve)).with_state(state.clone());
        let addr = crate::serve_locally(app).await;
        FakeJwks { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// Publishes another set (a rotation).
    pub fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    /// The `Cache-Control` header of the next answers (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.state.lock().unwrap().cache_control = value.map(str::to_string);
    }

    /// Answer `status` from now on (`None`: serve the set again).
    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().failing = status;
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.state.lock().unwrap().hits
    }
}

async fn serve(State(state): State<Arc<Mutex<Inner>>>) -> Response {
    let mut s = state.lock().unwrap();
    s.hits += 1;
    if let Some(status) = s.failing {
        return (StatusCode::from_u16(status).unwrap(), "unavailable").into_response();
    }
    let mut response = axum::Json(json!({ "keys": s.keys })).into_response();
    if let Some(cc) = &s.cache_control {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
    }
    response
}

/// A fresh ECDSA P-256 private key (PKCS#8 PEM), for ES256 tokens.
pub fn es256_private_key_pem() -> String {
    rcgen::KeyPair::generate().expect("generate an ES256 key").serialize_pem()
}
