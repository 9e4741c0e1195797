//! Graph's request bodies, error classes and `externalId`s, without a network.

use chrono::TimeZone;

use super::*;

fn req() -> MeetingRequest {
    let start = Utc.with_ymd_and_hms(2027, 3, 1, 9, 30, 0).unwrap();
    MeetingRequest {
        booking_id: Uuid::from_u128(0x1234),
        generation: 2,
        provider_user_id: Uuid::from_u128(7),
        title: "Consultation with Test User".into(),
        description: None,
        customer_email: None,
        start,
        end: start + chrono::Duration::minutes(50),
        settings: serde_json::json!({}),
        options: MeetingOptions::default(),
        expected_account: None,
    }
}

#[test]
fn a_create_names_the_booking_and_generation_and_a_move_sends_both_times() {
    let body = create_body(&req());
    assert_eq!(body["externalId"], "meetingd-00000000000000000000000000001234-g2");
    assert_eq!(body["startDateTime"], "2027-03-01T09:30:00Z");
    assert_eq!(body["endDateTime"], "2027-03-01T10:20:00Z");
    assert_eq!(body["subject"], "Consultation with Test User");
    let moved = move_body(&req());
    assert!(moved.get("externalId").is_none());
    assert_eq!(
        (moved["startDateTime"].as_str(), moved["endDateTime"].as_str()),
        (Some("2027-03-01T09:30:00Z"), Some("2027-03-01T10:20:00Z"))
    );
    assert_ne!(
        external_id(Uuid::from_u128(0x1234), 3),
        external_id(Uuid::from_u128(0x1234), 2),
        "a new generation, a new meeting"
    );
}

#[test]
fn graphs_times_are_compared_to_the_second() {
    let m = |start: &str, end: &str| OnlineMeeting {
        id: "x".into(),
        join_web_url: None,
        start_date_time: Some(start.into()),
        end_date_time: Some(end.into()),
    };
    assert!(m("2027-03-01T09:30:00.0000000Z", "2027-03-01T10:20:00.0000000Z").at_times_of(&req()));
    assert!(m("2027-03-01T10:30:00+01:00", "2027-03-01T11:20:00+01:00").at_times_of(&req()));
    assert!(!m("2027-03-01T12:30:00Z", "2027-03-01T13:20:00Z").at_times_of(&req()), "the booking moved");
    assert!(
        !OnlineMeeting { id: "x".into(), join_web_url: None, start_date_time: None, end_date_time: None }
            .at_times_of(&req())
    );
}

fn class(status: u16, body: serde_json::Value, retry_after: Option<Duration>) -> String {
    match classify(status, body.to_string().as_bytes(), retry_after) {
        CallError::Unauthorized => "unauthorized".into(),
        CallError::NotFound => "not_found".into(),
        CallError::Other(p) => format!("{}: {p} {:?}", p.class(), p.retry_after()),
    }
}

#[test]
fn errors_are_classified_by_status_and_code() {
    let e = |code: &str| serde_json::json!({"error": {"code": code, "message": "Access token has expired or is not yet valid."}});
    assert_eq!(class(401, e("InvalidAuthenticationToken"), None), "unauthorized");
    assert_eq!(class(404, e("NotFound"), None), "not_found");
    let ra = Some(Duration::from_secs(7));
    assert!(
        class(429, e("TooManyRequests"), ra).starts_with("rate_limited")
            && class(429, e("x"), ra).ends_with("Some(7s)")
    );
    assert!(class(503, e("ServiceNotAvailable"), ra).ends_with("Some(7s)"), "503 with Retry-After is honoured");
    assert!(class(502, serde_json::json!({}), None).starts_with("transient"));
    let denied = class(403, e("Forbidden"), None);
    assert!(denied.starts_with("permanent") && denied.contains("licence"), "{denied}");
    assert!(class(400, e("ErrorAccessDenied"), None).contains("licence"));
    let bad = class(400, e("BadRequest"), None);
    assert!(bad.starts_with("permanent") && bad.contains("BadRequest"), "{bad}");
    let long = class(400, serde_json::json!({"error": {"code": "x", "message": "m".repeat(5000)}}), None);
    assert!(long.len() < 600, "a long message is cut");
}

#[test]
fn options_map_to_online_meeting_properties_on_every_move() {
    let none = move_body(&req());
    for key in ["lobbyBypassSettings", "recordAutomatically", "joinMeetingIdSettings"] {
        assert!(none.get(key).is_none(), "an unset option stays the organiser's default: {key}");
    }
    let on = MeetingOptions {
        waiting_room: Some(true),
        recording: Some(Recording::Cloud),
        passcode: Some(true),
        mute_on_entry: Some(true),
    };
    let body = move_body(&MeetingRequest { options: on, ..req() });
    assert_eq!(body["lobbyBypassSettings"]["scope"], "organizer");
    assert_eq!(body["recordAutomatically"], true);
    assert_eq!(body["joinMeetingIdSettings"]["isPasscodeRequired"], true);
    assert!(body.get("muteOnEntry").is_none() && body.to_string().find("mute").is_none(), "not a Teams property");
    let off = MeetingOptions {
        waiting_room: Some(false),
        recording: Some(Recording::Local),
        passcode: Some(false),
        mute_on_entry: None,
    };
    let body = move_body(&MeetingRequest { options: off, ..req() });
    assert_eq!(body["lobbyBypassSettings"]["scope"], "everyone");
    assert_eq!(body["recordAutomatically"], false, "Teams records to the cloud only");
    assert_eq!(body["joinMeetingIdSettings"]["isPasscodeRequired"], false);
    assert!(
        create_body(&MeetingRequest { options: on, ..req() }).get("lobbyBypassSettings").is_none(),
        "createOrGet takes no options"
    );
}
