//! The fake's consent screen: the provider approves at once. A test that drives the flow itself
//! takes the code from [`FakeGoogle::consent`](super::FakeGoogle::consent); a browser is sent to
//! `/auth` and redirected back to the `redirect_uri` with `code`, `state` and `scope`, as Google
//! redirects after consent.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{CLIENT_ID, Inner, Shared};

/// Records an authorization code for this authorization request (its PKCE challenge and
/// redirect URI, checked at the token endpoint); `Err` names what Google would refuse.
pub(super) fn grant(s: &mut Inner, q: &HashMap<String, String>) -> Result<String, String> {
    let field = |name: &str| q.get(name).map(String::as_str);
    if field("client_id") != Some(CLIENT_ID) {
        return Err(format!("consent for an unknown client: {:?}", field("client_id")));
    }
    if field("response_type") != Some("code") || field("code_challenge_method") != Some("S256") {
        return Err("consent needs response_type=code and code_challenge_method=S256".into());
    }
    let (Some(challenge), Some(redirect)) = (field("code_challenge"), field("redirect_uri")) else {
        return Err("consent needs code_challenge and redirect_uri".into());
    };
    s.counter += 1;
    let code = format!("4/0Ab-code-{}-secret", s.counter);
    s.codes.insert(code.clone(), (challenge.to_string(), redirect.to_string()));
    Ok(code)
}

/// `GET /auth`: approves and redirects the browser back (400 for a request Google would refuse).
pub(super) async fn authorize(State(state): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    let code = match grant(&mut state.lock().unwrap(), &q) {
        Ok(code) => code,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let Ok(mut back) = url::Url::parse(&q["redirect_uri"]) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response();
    };
    back.query_pairs_mut()
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or_default())
        .append_pair("code", &code)
        .append_pair("scope", q.get("scope").map(String::as_str).unwrap_or_default());
    Redirect::to(back.as_str()).into_response()
}
