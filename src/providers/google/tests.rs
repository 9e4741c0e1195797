//! Google's event ids, error classes and links, without a network.

use super::*;

#[test]
fn event_ids_use_googles_alphabet_and_differ_per_generation() {
    let b = Uuid::new_v4();
    let id = event_id(b, 1);
    assert!(id.len() >= 5 && id.len() <= 1024);
    assert!(id.chars().all(|c| matches!(c, 'a'..='v' | '0'..='9')), "{id}");
    assert_ne!(id, event_id(b, 2));
    assert_eq!(id, event_id(b, 1));
}

fn capture(status: u16) -> Capture {
    Capture { status: Some(status), retry_after: Some(Duration::from_secs(7)) }
}

fn google_error(code: u16, reason: &str) -> google_calendar3::Error {
    google_calendar3::Error::BadRequest(serde_json::json!({
        "error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": "m"}], "code": code, "message": "m"}
    }))
}

#[test]
fn errors_are_classified_as_google_documents_them() {
    let cases = [
        (401, "authError", "unauthorized"),
        (403, "rateLimitExceeded", "rate_limited"),
        (403, "userRateLimitExceeded", "rate_limited"),
        (429, "rateLimitExceeded", "rate_limited"),
        (403, "quotaExceeded", "rate_limited"),
        (403, "forbiddenForNonOrganizer", "permanent"),
        (400, "invalid", "permanent"),
        (500, "backendError", "transient"),
        (503, "backendError", "transient"),
        (404, "notFound", "not_found"),
        (410, "deleted", "not_found"),
        (409, "duplicate", "duplicate"),
    ];
    for (code, reason, want) in cases {
        let got = match classify(&google_error(code, reason), &capture(code)) {
            CallError::Unauthorized => "unauthorized",
            CallError::NotFound => "not_found",
            CallError::Duplicate => "duplicate",
            CallError::Other(p) => p.class(),
        };
        assert_eq!(got, want, "{code} {reason}");
    }
    let CallError::Other(ProviderError::RateLimited { retry_after }) = classify(&google_error(429, "x"), &capture(429))
    else {
        panic!()
    };
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
    let quota = Capture { status: Some(403), retry_after: None };
    let CallError::Other(ProviderError::RateLimited { retry_after }) =
        classify(&google_error(403, "quotaExceeded"), &quota)
    else {
        panic!()
    };
    assert_eq!(retry_after, Some(Duration::from_secs(3600)), "quota exhaustion waits long");
}

#[test]
fn link_prefers_the_video_entry_point() {
    let mut e: Event = serde_json::from_value(serde_json::json!({
        "hangoutLink": "https://meet.google.com/aaa-bbbb-ccc",
        "conferenceData": {"entryPoints": [
            {"entryPointType": "phone", "uri": "tel:+1-555"},
            {"entryPointType": "video", "uri": "https://meet.google.com/xyz-abcd-efg"}
        ]}
    }))
    .unwrap();
    assert!(matches!(conference_state(&e), Conference::Ready(l) if l == "https://meet.google.com/xyz-abcd-efg"));
    e.conference_data = None;
    assert!(matches!(conference_state(&e), Conference::Ready(l) if l == "https://meet.google.com/aaa-bbbb-ccc"));
    let pending: Event = serde_json::from_value(serde_json::json!({
        "conferenceData": {"createRequest": {"requestId": "r", "status": {"statusCode": "pending"}}}
    }))
    .unwrap();
    assert!(matches!(conference_state(&pending), Conference::Pending));
    let failed: Event = serde_json::from_value(serde_json::json!({
        "conferenceData": {"createRequest": {"requestId": "r", "status": {"statusCode": "failure"}}}
    }))
    .unwrap();
    assert!(matches!(conference_state(&failed), Conference::Failed));
}

/// Property tests of every path Google's answers take through meetingd: the error JSON
/// (`classify`), events (`conference_state`, `marked_by_meetingd`), `Retry-After` headers, and
/// arbitrary bytes with any status served over real HTTP to the real calls.
mod untrusted {
    use std::sync::Mutex;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Words Google uses, so the classifier's branches are reached, and anything else.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "error",
                "errors",
                "code",
                "reason",
                "message",
                "duplicate",
                "rateLimitExceeded",
                "userRateLimitExceeded",
                "quotaExceeded",
                "dailyLimitExceeded",
                "forbiddenForNonOrganizer",
                "conferenceData",
                "entryPoints",
                "entryPointType",
                "video",
                "uri",
                "hangoutLink",
                "createRequest",
                "status",
                "statusCode",
                "failure",
                "success",
                "pending",
                "id",
                "items",
                "nextPageToken",
                "extendedProperties",
                "private",
                "booking_id",
                "start",
                "end",
                "dateTime",
            ])
            .prop_map(String::from),
            "\\PC{0,12}",
        ]
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (100u64..600).prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            word().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(word(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Google's error shape with arbitrary values in every slot.
    fn google_shaped() -> impl Strategy<Value = Value> {
        (json(), json(), prop::collection::vec((json(), json()), 0..4)).prop_map(|(code, message, errors)| {
            let errors: Vec<Value> = errors
                .into_iter()
                .map(|(reason, domain)| serde_json::json!({"reason": reason, "domain": domain}))
                .collect();
            serde_json::json!({"error": {"code": code, "message": message, "errors": errors}})
        })
    }

    fn any_json() -> impl Strategy<Value = Value> {
        prop_oneof![json(), google_shaped()]
    }

    fn retry_after() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|s| s.to_string()),
            "-?[0-9]{0,30}",
            (any::<i64>(), any::<u32>()).prop_map(|(s, n)| {
                chrono::DateTime::from_timestamp(s.rem_euclid(253_402_300_799), n % 1_000_000_000)
                    .map_or_else(String::new, |t| t.to_rfc2822())
            }),
            "[A-Za-z]{3}, [0-9]{1,2} [A-Za-z]{3} -?[0-9]{1,6} [0-9:]{0,9} [A-Z+0-9-]{0,5}",
            "\\PC{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn any_error_json_is_classified(body in any_json(), status in prop::option::of(0u16..1000), after in prop::option::of(any::<u64>())) {
            let capture = Capture { status, retry_after: after.map(Duration::from_secs) };
            let _: ProviderError = into_provider(classify(&google_calendar3::Error::BadRequest(body.clone()), &capture));
            let _ = code_of(&body);
        }

        #[test]
        fn any_event_json_is_read_or_refused(body in any_json()) {
            if let Ok(event) = serde_json::from_value::<Event>(body) {
                let _ = conference_state(&event);
                let _ = marked_by_meetingd(&event);
            }
        }

        #[test]
        fn any_retry_after_is_a_delay_or_none(value in retry_after()) {
            let parsed = parse_retry_after(&value);
            if let Ok(secs) = value.trim().parse::<u64>() {
                prop_assert_eq!(parsed, Some(Duration::from_secs(secs)));
            }
        }
    }

    /// What the fake serves: status, body, `Retry-After`.
    type Answer = Arc<Mutex<(u16, Vec<u8>, Option<String>)>>;

    async fn serve(answer: Answer) -> String {
        use axum::http::{HeaderValue, StatusCode};
        let app = axum::Router::new().fallback(move || {
            let answer = answer.clone();
            async move {
                let (status, body, after) = answer.lock().unwrap().clone();
                let mut response = axum::response::IntoResponse::into_response((
                    StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    body,
                ));
                if let Some(value) = after.and_then(|a| HeaderValue::from_bytes(a.as_bytes()).ok()) {
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/")
    }

    fn meet(base: &str) -> GoogleMeet {
        let mut config = crate::config::Config::defaults();
        config.google.api_base_url = base.parse().unwrap();
        config.google.request_timeout_ms = 5_000;
        config.google.conference_wait_ms = 0;
        let keyring = Arc::new(crate::crypto::Keyring::new(&crate::crypto::Keyring::generate_key(), &[]).unwrap());
        // Never used: the calls below are handed their token.
        let pool = crate::db::pool(&config.database, 1).unwrap();
        let tokens = Arc::new(TokenStore::new(pool, keyring, "test".into()));
        let oauth =
            OAuthClient::new("id", SecretString::from("s"), config.google.token_url.clone(), Duration::from_secs(1));
        GoogleMeet { client: http_client(), config: config.google, oauth, tokens }
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            // A success shape with arbitrary values, so deserialisation gets deep.
            (json(), json(), json()).prop_map(|(c, h, i)| {
                serde_json::to_vec(&serde_json::json!({"id": i, "conferenceData": c, "hangoutLink": h, "items": [c]}))
                    .unwrap()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Whatever Google answers — any status, any bytes, any `Retry-After` — every call
        /// meetingd makes ends in a value or a `ProviderError`, never a panic.
        #[test]
        fn any_answer_over_http_is_a_value_or_a_provider_error(
            status in prop_oneof![200u16..600, prop::sample::select(vec![200u16, 401, 403, 404, 409, 410, 429, 500, 503])],
            bytes in body(),
            after in prop::option::of(retry_after()),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let answer: Answer = Arc::new(Mutex::new((status, bytes, after)));
                let base = serve(answer).await;
                let meet = meet(&base);
                let token = SecretString::from("ya29.property");
                let _: Result<String, ProviderError> = account_email(&meet.config, &token).await;
                let _: Result<Event, ProviderError> = meet.get(token.clone(), "x").await.map_err(into_provider);
                let _: Result<Event, ProviderError> =
                    meet.insert(token.clone(), Event::default()).await.map_err(into_provider);
                let _: Result<Event, ProviderError> =
                    meet.patch(token.clone(), "x", Event::default()).await.map_err(into_provider);
                let _: Result<Events, ProviderError> = meet.list_page(token.clone(), None).await.map_err(into_provider);
                let _: Result<(), ProviderError> = meet.remove(token, "x").await.map_err(into_provider);
            });
        }
    }
}
