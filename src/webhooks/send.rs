//! One POST of one message to the receiver, signed per the Standard Webhooks specification with
//! the `standardwebhooks` crate, and what the answer means.
//!
//! Owns the HTTP client (no redirects: a 3xx is a failure, never a second destination) and the
//! signer. It must not touch the database or log the secret, the body or the URL's path and
//! query (a receiver's token may be there); reqwest's errors are stripped of their URL.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use standardwebhooks::Webhook;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A 2xx.
    Delivered { status: u16 },
    /// 410 Gone: the receiver wants no more of this message.
    Gone,
    /// Anything else: another status, a time-out, a connection that failed.
    Failed { status: Option<u16>, error: String, retry_after: Option<Duration> },
}

/// The signer and the HTTP client for one receiver.
pub struct Sender {
    http: reqwest::Client,
    url: url::Url,
    signer: Webhook,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("host", &self.url.host_str()).finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender to `url` signing with `secret` (`whsec_…`, checked by the configuration). The
    /// error never quotes the secret.
    pub fn new(url: url::Url, secret: &SecretString, timeout: Duration) -> Result<Sender, String> {
        let signer = Webhook::new(secret.expose_secret())
            .map_err(|_| "webhooks.secret is not a Standard Webhooks secret (whsec_ and base64)".to_string())?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("meetingd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("webhooks: cannot build the HTTP client: {e}"))?;
        Ok(Sender { http, url, signer })
    }

    /// POSTs `payload` as message `msg_id`, signed with the current time.
    pub async fn send(&self, msg_id: &str, payload: &str) -> Answer {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = match self.signer.sign(msg_id, timestamp, payload.as_bytes()) {
            Ok(s) => s,
            // Only a body that is not UTF-8 fails, and a `String` is.
            Err(e) => return Answer::Failed { status: None, error: format!("cannot sign: {e}"), retry_after: None },
        };
        let sent = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, msg_id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(payload.to_string())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() { "timed out" } else { "failed" };
                return Answer::Failed {
                    status: None,
                    error: format!("request {what}: {}", error_chain(&e.without_url())),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            return Answer::Delivered { status: status.as_u16() };
        }
        if status == reqwest::StatusCode::GONE {
            return Answer::Gone;
        }
        let retry_after = matches!(status.as_u16(), 429 | 503)
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(crate::providers::parse_retry_after);
        Answer::Failed { status: Some(status.as_u16()), error: format!("answered {status}"), retry_after }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
