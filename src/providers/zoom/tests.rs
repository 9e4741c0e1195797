//! Zoom's request bodies, error classes, marks and intents, without a network.

use chrono::TimeZone;

use super::*;

fn req(title: &str, description: Option<&str>) -> MeetingRequest {
    let start = Utc.with_ymd_and_hms(2027, 3, 1, 9, 30, 0).unwrap();
    MeetingRequest {
        booking_id: Uuid::from_u128(0x1234),
        generation: 1,
        provider_user_id: Uuid::from_u128(7),
        title: title.to_string(),
        description: description.map(str::to_string),
        customer_email: Some("customer@example.com".into()),
        start,
        end: start + chrono::Duration::minutes(50) + chrono::Duration::seconds(1),
        settings: serde_json::json!({}),
        options: MeetingOptions::default(),
        expected_account: None,
    }
}

#[test]
fn the_create_body_is_a_scheduled_meeting_in_utc() {
    let mark = marks().seal(Uuid::from_u128(0x1234), 1);
    let body = meeting_body(&req("Consultation with Test User", Some("Bring notes")), mark.clone(), true);
    assert_eq!(body["type"], 2);
    assert_eq!(body["start_time"], "2027-03-01T09:30:00Z");
    assert_eq!(body["duration"], 51, "minutes, rounded up");
    assert_eq!(body["timezone"], "UTC");
    assert_eq!(body["topic"], "Consultation with Test User");
    let agenda = body["agenda"].as_str().unwrap();
    assert!(agenda.starts_with(&mark), "{agenda}");
    assert!(agenda.ends_with("Bring notes"), "{agenda}");
    assert!(body.get("settings").is_none() && body.get("start_url").is_none());
    assert!(meeting_body(&req("t", None), mark, false).get("type").is_none(), "a move does not change the type");
}

#[test]
fn options_become_zoom_settings_and_a_passcode_on_create_only() {
    use crate::settings::Recording;
    let all = MeetingOptions {
        waiting_room: Some(true),
        recording: Some(Recording::Cloud),
        passcode: Some(true),
        mute_on_entry: Some(true),
    };
    let r = MeetingRequest { options: all, ..req("t", None) };
    let created = meeting_body(&r, "mark".into(), true);
    assert_eq!(
        created["settings"],
        serde_json::json!({"waiting_room": true, "join_before_host": false, "auto_recording": "cloud", "mute_upon_entry": true})
    );
    assert_eq!(created["default_password"], true, "Zoom makes the passcode, by the account's rules");
    assert!(created.get("password").is_none());

    let moved = meeting_body(&r, "mark".into(), false);
    assert_eq!(moved["settings"], created["settings"], "a move keeps the options");
    assert!(
        moved.get("password").is_none() && moved.get("default_password").is_none(),
        "a move does not change the passcode (the link carries it)"
    );

    let off = MeetingOptions {
        waiting_room: Some(false),
        recording: Some(Recording::None),
        passcode: Some(false),
        mute_on_entry: Some(false),
    };
    let body = meeting_body(&MeetingRequest { options: off, ..req("t", None) }, "mark".into(), true);
    assert_eq!(
        body["settings"],
        serde_json::json!({"waiting_room": false, "auto_recording": "none", "mute_upon_entry": false}),
        "no waiting room leaves join_before_host as the account has it"
    );
    assert!(body.get("password").is_none() && body.get("default_password").is_none(), "passcode false: Zoom's default");

    let some = MeetingOptions { recording: Some(Recording::Local), ..MeetingOptions::default() };
    let body = meeting_body(&MeetingRequest { options: some, ..req("t", None) }, "mark".into(), false);
    assert_eq!(body["settings"], serde_json::json!({"auto_recording": "local"}), "only the options set");
}

#[test]
fn zoom_honours_every_option() {
    assert_eq!(SUPPORTED, MeetingOption::ALL);
}

#[test]
fn topic_and_agenda_are_cut_to_zooms_limits() {
    let long = "é".repeat(5000);
    let mark = marks().seal(Uuid::from_u128(0x1234), 1);
    let body = meeting_body(&req(&long, Some(&long)), mark.clone(), true);
    assert_eq!(body["topic"].as_str().unwrap().chars().count(), TOPIC_MAX);
    let agenda = body["agenda"].as_str().unwrap();
    assert_eq!(agenda.chars().count(), AGENDA_MAX);
    assert!(agenda.starts_with(&mark), "the mark survives the cut");
    assert_eq!(meeting_body(&req("t", Some("  ")), mark.clone(), true)["agenda"], mark);
}

fn marks_with(current: &SecretString, old: &[SecretString]) -> Marks {
    Marks::new(Arc::new(Keyring::new(current, old).unwrap()))
}

fn marks() -> Marks {
    marks_with(&Keyring::generate_key(), &[])
}

#[test]
fn a_mark_names_its_booking_and_generation_to_meetingd_alone() {
    let key = Keyring::generate_key();
    let m = marks_with(&key, &[]);
    let b = Uuid::new_v4();
    let mark = m.seal(b, 3);
    assert!(mark.starts_with(MARK_PREFIX) && mark.ends_with(']'), "{mark}");
    assert!(!mark.contains(&b.to_string()) && !mark.contains(&b.simple().to_string()), "the booking id never shows");
    assert_ne!(mark, m.seal(b, 3), "a fresh nonce each time");
    assert_eq!(m.read(&format!("{mark}\n\nBring notes")), Some((b, 3)));
    assert!(m.names(&mark, b, 3) && !m.names(&mark, b, 2) && !m.names(&mark, Uuid::new_v4(), 3));
    // Anyone without the key: a mark cannot be forged or read.
    assert_eq!(marks().read(&mark), None, "another key reads nothing");
    assert_eq!(m.read(&format!("{MARK_PREFIX}{b}:3]")), None, "a forged mark is not a mark");
    assert_eq!(m.read("[meetingd ]"), None);
    // A forged mark first does not hide the real one after it.
    assert_eq!(m.read(&format!("[meetingd nonsense] {mark}")), Some((b, 3)));
    // After a key rotation (the old key kept for decryption) old marks still read.
    let rotated = marks_with(&Keyring::generate_key(), &[key]);
    assert_eq!(rotated.read(&mark), Some((b, 3)));
    // Meetings made before marks were sealed are still recognised.
    assert!(m.names(&format!("{}\n\nnotes", unsealed_mark(b, 3)), b, 3));
    assert!(!m.names(&unsealed_mark(b, 3), b, 4));
}

#[test]
fn an_intent_is_never_taken_for_a_meeting_id() {
    let b = Uuid::new_v4();
    let intent = intent_of(b, 2);
    assert_eq!(parse_intent(&intent), Some((b, 2)));
    assert!(numeric(&intent).is_none());
    assert_eq!(parse_intent("81234567897"), None);
    assert_eq!(numeric("81234567897"), Some("81234567897"));
}

fn class(status: u16, body: serde_json::Value, retry_after: Option<Duration>) -> (String, Option<Duration>) {
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 22, 0, 0).unwrap();
    match classify(status, body.to_string().as_bytes(), retry_after, now) {
        CallError::Unauthorized => ("unauthorized".into(), None),
        CallError::NotFound => ("not_found".into(), None),
        CallError::DailyLimit(wait) => ("daily_limit".into(), Some(wait)),
        CallError::Other(p) => (p.class().into(), p.retry_after()),
    }
}

#[test]
fn errors_are_classified_as_zoom_documents_them() {
    let e = |code: i64, message: &str| serde_json::json!({"code": code, "message": message});
    assert_eq!(class(401, e(124, "Invalid access token."), None).0, "unauthorized");
    assert_eq!(class(400, e(124, "Invalid access token."), None).0, "unauthorized", "the code decides");
    assert_eq!(class(404, e(3001, "Meeting does not exist: 1."), None).0, "not_found");
    assert_eq!(class(400, e(3001, "Meeting does not exist: 1."), None).0, "not_found");
    assert_eq!(
        class(400, e(3002, "Sorry, you cannot delete this meeting since it is in progress."), None).0,
        "transient"
    );
    assert_eq!(class(400, e(300, "Invalid parameter: start_time."), None).0, "permanent");
    assert_eq!(class(403, e(200, "No permission."), None).0, "permanent");
    assert_eq!(class(500, e(0, "x"), None).0, "transient");
    assert_eq!(class(503, serde_json::json!("not an object"), None).0, "transient");
    assert_eq!(
        class(429, e(429, "per-second limit"), Some(Duration::from_secs(3))),
        ("rate_limited".into(), Some(Duration::from_secs(3)))
    );
    assert_eq!(class(429, e(429, "per-second limit"), None), ("rate_limited".into(), None));
    // The daily limit without Retry-After: until 00:00 GMT (two hours after 22:00).
    let daily = "You have exceeded the daily rate limit (100) of Meeting Create/Update API requests.";
    assert_eq!(class(429, e(429, daily), None), ("daily_limit".into(), Some(Duration::from_secs(7200))));
    let per_second = "You have reached the maximum per-second rate limit for this API. Try again later.";
    assert_eq!(class(429, e(429, per_second), None), ("rate_limited".into(), None), "not the daily limit");
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 22, 0, 0).unwrap();
    let daily_limit = classify(429, e(429, daily).to_string().as_bytes(), None, now);
    let p = into_provider(daily_limit);
    assert_eq!((p.class(), p.retry_after()), ("rate_limited", Some(Duration::from_secs(7200))), "for the worker");
    assert_eq!(class(429, e(429, daily), Some(Duration::from_secs(60))).1, Some(Duration::from_secs(60)));
}

#[test]
fn a_meeting_answer_never_keeps_the_start_url() {
    let answer = serde_json::json!({
        "id": 81234567890u64, "join_url": "https://us05web.zoom.us/j/81234567890?pwd=x",
        "start_url": "https://us05web.zoom.us/s/81234567890?zak=host-key", "agenda": "a", "duration": 30,
        "start_time": "2027-03-01T09:30:00Z", "topic": "t", "type": 2
    });
    let m: ZoomMeeting = serde_json::from_value(answer).unwrap();
    assert!(!format!("{m:?}").contains("zak"), "{m:?}");
    let meeting = meeting_of(m, &Who::provider(Uuid::nil())).unwrap();
    assert_eq!(meeting.external_id, "81234567890");
    assert_eq!(meeting.join_url, "https://us05web.zoom.us/j/81234567890?pwd=x");
    let no_link: ZoomMeeting = serde_json::from_value(serde_json::json!({"id": 1})).unwrap();
    assert!(matches!(meeting_of(no_link, &Who::provider(Uuid::nil())), Err(ProviderError::Transient(_))));
}

#[test]
fn the_daily_limit_resets_at_midnight_utc() {
    let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 30).unwrap();
    assert_eq!(until_midnight(at), Duration::from_secs(30));
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).unwrap();
    assert_eq!(until_midnight(at), Duration::from_secs(86_400));
}
