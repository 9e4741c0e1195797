//! The OAuth state cookie and callback, the scopes a connection must have, and the links
//! meetingd writes and exports (the link rule of `meetingd::links`).

use std::time::Duration;

use meetingd_testkit::db::eventually;
use meetingd_testkit::market::{self, meeting};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::Value;
use uuid::Uuid;

use super::{APP_URL, Api, urlencode};

/// A connection started by `user`: the `Set-Cookie` header, the `name=value` pair of the cookie,
/// the state and the consent-screen URL.
async fn start(api: &Api, user: Uuid) -> (String, String, String, url::Url) {
    let r = api.call("POST", "/api/auth/google-meet/connect", Some(api.as_user(user)), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let header = r.headers().get(SET_COOKIE).unwrap().to_str().unwrap().to_string();
    let pair = header.split(';').next().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    let url: url::Url = body["authorization_url"].as_str().unwrap().parse().unwrap();
    let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();
    (header, pair, state, url)
}

/// The browser comes back from the consent screen with `code` and `state` (and `cookie`);
/// returns where it is redirected and the `Set-Cookie` headers of the answer.
async fn back(api: &Api, code: &str, state: &str, cookie: Option<&str>) -> (String, Vec<String>) {
    let query = format!("code={}&state={}", urlencode(code), urlencode(state));
    let mut req = api.http.get(api.url(&format!("/api/auth/google-meet/callback?{query}")));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set: Vec<String> = r.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    (r.headers().get(LOCATION).unwrap().to_str().unwrap().to_string(), set)
}

fn error(code: &str) -> String {
    format!("{APP_URL}/dashboard/integrations?error={code}")
}

fn connected() -> String {
    format!("{APP_URL}/dashboard/integrations?connected=google_meet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_cookie_is_host_prefixed_when_secure() {
    let api = Api::start().await;
    let (header, pair, state, url) = start(&api, api.provider).await;
    assert_eq!(pair, format!("__Host-meetingd_oauth_state={state}"));
    let attributes: Vec<&str> = header.split(';').map(str::trim).collect();
    for wanted in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(attributes.contains(&wanted), "{wanted} in {header}");
    }
    assert!(!header.to_ascii_lowercase().contains("domain="), "no Domain: {header}");

    // A cookie without the prefix (as a sibling subdomain can set one) is not the state cookie.
    let code = api.google.consent(&url);
    let planted = format!("meetingd_oauth_state={state}");
    assert_eq!(back(&api, &code, &state, Some(&planted)).await.0, error("invalid_state"));
    // The right cookie still works, and the answer clears it with the same attributes.
    let (location, set) = back(&api, &code, &state, Some(&pair)).await;
    assert_eq!(location, connected());
    let removal = set.iter().find(|c| c.starts_with("__Host-meetingd_oauth_state=")).expect("the cookie cleared");
    for wanted in ["Secure", "Path=/", "Max-Age=0"] {
        assert!(removal.split(';').map(str::trim).any(|a| a == wanted), "{wanted} in {removal}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_cookie_keeps_its_plain_name_for_plain_http_development() {
    let api = Api::start_with(|c| c.http.cookie_secure = false).await;
    let (header, pair, state, _) = start(&api, api.provider).await;
    assert_eq!(pair, format!("meetingd_oauth_state={state}"));
    assert!(!header.split(';').any(|a| a.trim() == "Secure"), "{header}");
    assert!(header.contains("Path=/") && header.contains("HttpOnly"), "{header}");
    assert_eq!(api.connect_google(api.provider).await, connected());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_the_right_cookie_leaves_the_state_for_the_right_browser() {
    let api = Api::start().await;
    let (_, pair, state, url) = start(&api, api.provider).await;
    let (_, other_pair, _, _) = start(&api, api.provider).await;
    let code = api.google.consent(&url);
    // Someone else's browser (no cookie), and a cookie of another pending state.
    assert_eq!(back(&api, &code, &state, None).await.0, error("invalid_state"));
    let (location, set) = back(&api, &code, &state, Some(&other_pair)).await;
    assert_eq!(location, error("invalid_state"));
    assert!(set.is_empty(), "the other state's cookie is left alone: {set:?}");
    assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.oauth_states").await, 2);
    // The browser that started it comes back: connected, and the state is gone.
    assert_eq!(back(&api, &code, &state, Some(&pair)).await.0, connected());
    assert_eq!(back(&api, &code, &state, Some(&pair)).await.0, error("invalid_state"));
    assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.oauth_states").await, 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_without_the_calendar_scope_stores_nothing() {
    let api = Api::start().await;
    let integrations = "SELECT count(*) FROM user_meeting_integrations";
    for unticked in ["openid https://www.googleapis.com/auth/userinfo.email", ""] {
        api.google.grant_scope(Some(unticked));
        assert_eq!(api.connect_google(api.provider).await, error("insufficient_scope"), "{unticked:?}");
        assert_eq!(market::count(&api.c, integrations).await, 0, "nothing stored for {unticked:?}");
        assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.oauth_states").await, 0, "state used");
    }
    // The whole calendar includes its events; the scopes granted are the ones recorded.
    let full = "openid https://www.googleapis.com/auth/calendar";
    api.google.grant_scope(Some(full));
    assert_eq!(api.connect_google(api.provider).await, connected());
    let scopes: Vec<String> = api.c.query_one("SELECT scope FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert_eq!(scopes, ["openid", "https://www.googleapis.com/auth/calendar"]);
    // An answer without `scope` grants what was asked (RFC 6749 §5.1).
    api.google.grant_scope(None);
    assert_eq!(api.connect_google(api.other_provider).await, connected());
    assert_eq!(market::count(&api.c, integrations).await, 2);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_link_from_the_platform_fails_the_job_and_is_never_written() {
    let api = Api::start().await;
    api.connect_google(api.provider).await;
    api.google.answer_link("https://meet.google.com/x\r\nATTACH:https://evil.example/a");
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    let m = eventually("the job failed", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.status.as_deref() == Some("failed")).then_some(m)
    })
    .await;
    assert_eq!(m.link, None);
    let error = m.error.unwrap();
    assert!(error.contains("Google Meet answered a meeting link that meetingd does not write"), "{error}");
    assert!(error.contains("control character"), "{error}");
    assert!(!error.contains("evil"), "the link is not quoted: {error}");
    assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.meetings WHERE join_url LIKE '%evil%'").await, 0);
    let audit = market::audit(&api.c, b).await;
    assert!(audit.iter().any(|(action, outcome)| action == "meeting.link_refused" && outcome == "failed"), "{audit:?}");
    assert_eq!(market::count(&api.c, "SELECT count(*) FROM meetingd.audit_log WHERE detail LIKE '%evil%'").await, 0);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_links_follow_the_link_rule() {
    let api = Api::start().await;
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    let long = format!("https://meet.example/{}", "é".repeat(400));
    for bad in ["https://meet.example/x\r\nATTACH:https://evil.example/a", "https://meet.example/x\n", long.as_str()] {
        let r = api
            .call(
                "PUT",
                &format!("/api/meetings/{b}/update"),
                Some(api.as_user(api.provider)),
                Some(serde_json::json!({"meeting_link": bad})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_link");
    }
    assert_ne!(meeting(&api.c, b).await.status.as_deref(), Some("manual"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_file_leaves_out_an_injected_link_and_passes_a_strict_parser() {
    let api = Api::start().await;
    let b = market::book(&api.c, api.service, api.customer, "confirmed").await;
    let hostile = "https://meet.example/x\r\nATTACH:https://evil.example/payload";
    api.c.execute("UPDATE bookings SET meeting_link = $2 WHERE id = $1", &[&b, &hostile]).await.unwrap();
    for user in [api.provider, api.customer] {
        let r = api.call("GET", &format!("/api/bookings/{b}/calendar.ics"), Some(api.as_user(user)), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.unwrap();
        let lines = content_lines(&text);
        assert!(!lines.iter().any(|l| l.starts_with("ATTACH")), "{text}");
        assert!(!text.contains("evil.example"), "the invalid link is left out: {text}");
        assert!(!lines.iter().any(|l| l.starts_with("URL") || l.starts_with("CONFERENCE")), "{text}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("CALSCALE")).count(), 1, "{text}");
        strict::check(&text);
    }
    // A valid stored link is exported, and the file still passes.
    let fine = "https://meet.example/room-1";
    api.c.execute("UPDATE bookings SET meeting_link = $2 WHERE id = $1", &[&b, &fine]).await.unwrap();
    let r = api.call("GET", &format!("/api/bookings/{b}/calendar.ics"), Some(api.as_user(api.customer)), None).await;
    let text = r.text().await.unwrap();
    assert!(content_lines(&text).iter().any(|l| l == &format!("URL:{fine}")), "{text}");
    strict::check(&text);
    api.stop().await;
}

/// The content lines of a calendar file, folds undone (RFC 5545 §3.1), after checking that
/// CR and LF appear only as CRLF line ends.
fn content_lines(text: &str) -> Vec<String> {
    assert!(text.ends_with("\r\n"));
    let mut lines: Vec<String> = Vec::new();
    for physical in text.split_terminator("\r\n") {
        assert!(!physical.contains(['\r', '\n']), "a bare line break in {physical:?}");
        match physical.strip_prefix([' ', '\t']) {
            Some(rest) => lines.last_mut().unwrap().push_str(rest),
            None => lines.push(physical.to_string()),
        }
    }
    lines
}

/// An iCalendar reader independent of the crate that writes the file.
pub(crate) mod strict {
    use ical_strict::param::IcalParamKind;
    use ical_strict::prop::IcalPropKind;
    use ical_strict::tree::cst::IcalCst;
    use ical_strict::validator::IcalValidateError;

    /// Parses `text` strictly (a calendar it cannot structure is refused) and validates it
    /// against RFC 5545 (properties each component requires, how often each may appear in a
    /// component, the value types and parameters each takes).
    pub fn check(text: &str) {
        let cst = IcalCst::parse(text).unwrap_or_else(|e| panic!("the strict parser refused the file ({e:?}): {text}"));
        if let Err(errors) = cst.decode().validate() {
            let errors: Vec<String> = errors.iter().filter(|e| !known_gap(e)).map(ToString::to_string).collect();
            assert!(errors.is_empty(), "the file breaks RFC 5545: {errors:?}\n{text}");
        }
    }

    /// The validator's table gives `CONFERENCE` only the common parameters, but RFC 7986 §5.11
    /// allows `FEATURE` and `LABEL` on it; everything else it reports counts.
    fn known_gap(e: &IcalValidateError) -> bool {
        matches!(
            e,
            IcalValidateError::ParamNotAllowed {
                prop: IcalPropKind::Conference,
                param: IcalParamKind::Feature | IcalParamKind::Label
            }
        )
    }
}
