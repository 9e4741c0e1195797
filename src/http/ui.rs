//! The web app's drop-in web components and their demo page: static files compiled into the
//! binary (`include_str!`), no build step.
//!
//! `GET /ui/meetingd-elements.js` is always served (an ES module: `<meetingd-integrations>`,
//! `<meetingd-platform-selector>`, `<meetingd-meeting-link>`), cacheable by anyone and
//! revalidated by its `ETag`. The demo page (`/ui/`, its `demo.js` and `demo.css`) only with
//! `http.ui_demo`; then, when `http.app_url` is this server itself, the OAuth callback's redirect
//! to `/dashboard/integrations` is sent on to the demo page. Nothing here reads a token or the
//! database: the components call the API with the host page's bearer token.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::config::HttpConfig;

/// The components' module.
pub const ELEMENTS_JS: &str = include_str!("ui/meetingd-elements.js");
const DEMO_HTML: &str = include_str!("ui/demo.html");
const DEMO_JS: &str = include_str!("ui/demo.js");
const DEMO_CSS: &str = include_str!("ui/demo.css");

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The demo page's policy: its own scripts, styles and API only; the components' styles are
/// constructed style sheets, which `style-src` does not block.
const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                        img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The ETag of a served file: a digest of its bytes, so a new build's file is fetched anew.
fn etag(body: &str) -> HeaderValue {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header value")
}

static ELEMENTS_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag(ELEMENTS_JS));

/// The routes of this module under `config` (they use no state).
pub fn routes<S: Clone + Send + Sync + 'static>(config: &HttpConfig) -> Router<S> {
    let router = Router::new().route("/ui/meetingd-elements.js", get(elements));
    if !config.ui_demo {
        return router;
    }
    tracing::warn!(
        "http.ui_demo is on: the web components' demo page is served at /ui/ (for development, not production)"
    );
    let router = router
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { demo_file(DEMO_HTML, "text/html; charset=utf-8") }))
        .route("/ui/demo.js", get(|| async { demo_file(DEMO_JS, JAVASCRIPT) }))
        .route("/ui/demo.css", get(|| async { demo_file(DEMO_CSS, "text/css; charset=utf-8") }));
    if config.app_url.origin() == config.public_url.origin() {
        router.route("/dashboard/integrations", get(back_to_demo))
    } else {
        router
    }
}

/// The module: cached for five minutes by anyone (it holds nothing private), then revalidated;
/// `Access-Control-Allow-Origin: *` so a page on another origin may import it.
async fn elements(headers: HeaderMap) -> Response {
    let tag = ELEMENTS_ETAG.clone();
    let common = [
        (header::ETAG, tag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300, must-revalidate")),
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*" || v.trim().trim_start_matches("W/") == tag.to_str().unwrap_or_default());
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, HeaderValue::from_static(JAVASCRIPT))], ELEMENTS_JS).into_response()
}

/// A file of the demo page: never cached (the demo is for development), framed by nobody.
fn demo_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, DEMO_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// Where the OAuth callback sends the browser when the app is this server: the demo page, with
/// the callback's `?connected=` or `?error=`.
async fn back_to_demo(RawQuery(query): RawQuery) -> Redirect {
    match query.filter(|q| !q.is_empty()) {
        Some(q) => Redirect::to(&format!("/ui/?{q}")),
        None => Redirect::to("/ui/"),
    }
}

#[cfg(test)]
mod tests;
