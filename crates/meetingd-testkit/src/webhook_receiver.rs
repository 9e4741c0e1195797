//! An in-process webhook receiver (axum on 127.0.0.1): records every request it gets (headers,
//! raw body, when) and answers with the statuses it was told to, then 200, with a `Retry-After`
//! on a 429 or 503 when told one.
//!
//! It verifies nothing itself: tests check the signatures with `standardwebhooks`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// The `whsec_` secret tests sign with (24 random bytes, base64).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it answered.
    pub answered: u16,
}

impl Received {
    /// The `webhook-id` header.
    pub fn id(&self) -> String {
        self.headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Statuses to answer, in order; 200 once they are used up.
    script: VecDeque<u16>,
    /// Answered when the script is used up (200 unless set).
    otherwise: Option<u16>,
    /// The `Retry-After` header of every 429 and 503 answer.
    retry_after: Option<String>,
}

#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    base: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(inner.clone());
        let addr = crate::serve_locally(app).await;
        Receiver { inner, base: format!("http://{addr}") }
    }

    /// The URL to configure as `webhooks.url` (with a query token of the receiver's own, which
    /// must never reach a log).
    pub fn url(&self) -> String {
        format!("{}/hook?token=receiver-private-token", self.base)
    }

    /// Answer these statuses to the next requests, in order.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script.extend(statuses);
    }

    /// Answer `status` to every request once the script is used up.
    pub fn otherwise(&self, status: u16) {
        self.inner.lock().unwrap().otherwise = Some(status);
    }

    /// Send this `Retry-After` (seconds or an HTTP date) with every 429 and 503 answer.
    pub fn retry_after(&self, value: &str) {
        self.inner.lock().unwrap().retry_after = Some(value.to_string());
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap) {
    let mut inner = inner.lock().unwrap();
    let status = inner.script.pop_front().or(inner.otherwise).unwrap_or(200);
    inner.received.push(Received { headers, body, at: Instant::now(), answered: status });
    let mut answer = HeaderMap::new();
    if let (429 | 503, Some(value)) = (status, &inner.retry_after) {
        answer.insert(axum::http::header::RETRY_AFTER, value.parse().unwrap());
    }
    (StatusCode::from_u16(status).unwrap(), answer)
}
