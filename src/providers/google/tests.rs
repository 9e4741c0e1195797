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
