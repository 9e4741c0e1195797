//! `plan` against ARCHITECTURE.md's "What reconcile decides" table, one case per row (and the
//! intent-adoption paragraph under it), in the table's order.

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::{Plan, plan};
use crate::config::Fallback;
use crate::job::{BookingView, Claim, Intent, MeetingRecord, Outcome, Snapshot};
use crate::providers::{Account, Meeting, Platform};

/// This server offers Google Meet and Jitsi (not Zoom or Teams), with Jitsi as the fallback.
fn available(p: Platform) -> bool {
    matches!(p, Platform::GoogleMeet | Platform::Jitsi)
}
const FALLBACK: Fallback = Fallback::Platform(Platform::Jitsi);

fn provider() -> Uuid {
    Uuid::from_u128(1)
}
fn integration() -> Uuid {
    Uuid::from_u128(2)
}
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 5, 1, 9, 0, 0).unwrap()
}
fn end() -> DateTime<Utc> {
    start() + Duration::hours(1)
}

/// A confirmed booking of an online Google Meet service whose provider connected Google, with
/// no meeting yet.
fn snapshot() -> Snapshot {
    let booking_id = Uuid::from_u128(10);
    Snapshot {
        claim: Claim {
            job_id: 1,
            booking_id,
            claim_seq: 1,
            token: Uuid::from_u128(11),
            version: 1,
            attempt: 1,
            requested_at: start() - Duration::days(1),
            intent: None,
            intended_generation: 0,
            claimed: None,
            durable: false,
            write_failures: 0,
            rate_paid: None,
        },
        booking: Some(BookingView {
            booking_id,
            status: "confirmed".into(),
            start: Some(start()),
            end: Some(end()),
            customer_id: Some(Uuid::from_u128(3)),
            meeting_status: None,
            meeting_link: None,
            service_id: Uuid::from_u128(4),
            provider_id: Some(provider()),
            title: Some("Consultation".into()),
            description: None,
            is_online: true,
            meeting_platform: Some("google_meet".into()),
            meeting_settings: serde_json::Value::Null,
            connected: true,
            integration: Some(Account { user_id: provider(), integration_id: integration(), identity: None }),
            customer_name: Some("Cora".into()),
            customer_email: Some("cora@example.com".into()),
            provider_name: Some("Pat".into()),
            unreadable: None,
        }),
        meeting: None,
    }
}

/// [`snapshot`] with a live Google meeting (generation 1) at the booking's times, shown on the booking.
fn with_meeting() -> Snapshot {
    let mut s = snapshot();
    s.meeting = Some(MeetingRecord {
        platform: "google_meet".into(),
        requested_platform: Some("google_meet".into()),
        meeting: Meeting {
            external_id: "meetingd10g1".into(),
            join_url: "https://meet.google.com/abc-defg-hij".into(),
            account: Some(Account { user_id: provider(), integration_id: integration(), identity: None }),
        },
        start: start(),
        end: end(),
        generation: 1,
        live: true,
        owner: Some(provider()),
    });
    let b = s.booking.as_mut().unwrap();
    b.meeting_link = Some("https://meet.google.com/abc-defg-hij".into());
    b.meeting_status = Some("ready".into());
    s
}

fn booking(s: &mut Snapshot) -> &mut BookingView {
    s.booking.as_mut().unwrap()
}

/// What a plan amounts to, for comparing with the table.
#[derive(Debug, PartialEq)]
enum Decision {
    Create {
        platform: Platform,
        fallback: bool,
        generation: i32,
    },
    Keep {
        generation: i32,
    },
    Update {
        generation: i32,
    },
    Delete {
        external_id: String,
    },
    Replace {
        old: String,
        platform: Platform,
        generation: i32,
    },
    LeaveAsIs,
    Nothing,
    /// The sentence contains this.
    Fail(&'static str),
}

fn decide(s: &Snapshot, fallback: Fallback) -> Decision {
    match plan(s, available, fallback) {
        Plan::Create { choice, req } => {
            Decision::Create { platform: choice.platform, fallback: choice.fallback, generation: req.generation }
        }
        Plan::Keep { record, req } => {
            assert_eq!(req.generation, record.generation, "a kept meeting keeps its generation");
            Decision::Keep { generation: req.generation }
        }
        Plan::Update { record, req } => {
            assert_eq!(req.generation, record.generation, "a moved meeting keeps its generation");
            assert_eq!(
                (req.start, req.end),
                (s.booking.as_ref().unwrap().start.unwrap(), s.booking.as_ref().unwrap().end.unwrap())
            );
            Decision::Update { generation: req.generation }
        }
        Plan::Delete { record } => Decision::Delete { external_id: record.meeting.external_id },
        Plan::Replace { old, choice, req } => {
            Decision::Replace { old: old.meeting.external_id, platform: choice.platform, generation: req.generation }
        }
        Plan::Record(Outcome::Unchanged) => Decision::LeaveAsIs,
        Plan::Record(Outcome::Unlinked { deleted: false }) => Decision::Nothing,
        Plan::Record(other) => panic!("plan recorded {other:?}"),
        Plan::Fail(sentence) => {
            let wanted = [
                "has no start or end time",
                "before it starts",
                "has no provider",
                "not one meetingd knows",
                "meetingd cannot read this booking: the booking's status cannot be read",
                "has not connected Google Meet",
                "Zoom meetings are not available",
            ];
            let found = wanted
                .iter()
                .find(|w| sentence.contains(**w))
                .unwrap_or_else(|| panic!("unexpected sentence: {sentence}"));
            Decision::Fail(found)
        }
    }
}

fn delete_recorded() -> Decision {
    Decision::Delete { external_id: "meetingd10g1".into() }
}

/// One row of the table: a name, the snapshot, the server's fallback, and the decision it must get.
type Case = (&'static str, Snapshot, Fallback, Decision);

fn table() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name, s: Snapshot, want| cases.push((name, s, FALLBACK, want));
    let mut without_fallback: Vec<Case> = Vec::new();

    // confirmed, online, not manual | none live | choose platform → create
    add(
        "confirmed, no meeting: create on the service's platform",
        snapshot(),
        Decision::Create { platform: Platform::GoogleMeet, fallback: false, generation: 1 },
    );
    let mut s = snapshot();
    booking(&mut s).connected = false;
    add(
        "confirmed, service's platform not connected: create on the fallback",
        s,
        Decision::Create { platform: Platform::Jitsi, fallback: true, generation: 1 },
    );
    let mut s = snapshot();
    booking(&mut s).meeting_platform = Some("zoom".into());
    add(
        "confirmed, service's platform not offered here: create on the fallback",
        s,
        Decision::Create { platform: Platform::Jitsi, fallback: true, generation: 1 },
    );
    let mut s = with_meeting();
    s.meeting.as_mut().unwrap().live = false;
    s.booking.as_mut().unwrap().meeting_link = None;
    add(
        "confirmed, recorded meeting deleted: create with a new generation",
        s,
        Decision::Create { platform: Platform::GoogleMeet, fallback: false, generation: 2 },
    );

    // same | live, same times | keep
    add("confirmed, live meeting at the booking's times: keep", with_meeting(), Decision::Keep { generation: 1 });

    // same | live, other times | update (same link)
    let mut s = with_meeting();
    booking(&mut s).start = Some(start() + Duration::hours(2));
    booking(&mut s).end = Some(end() + Duration::hours(2));
    add("confirmed, booking moved: update", s, Decision::Update { generation: 1 });
    let mut s = with_meeting();
    booking(&mut s).end = Some(end() + Duration::minutes(30));
    add("confirmed, booking lengthened: update", s, Decision::Update { generation: 1 });

    // same | live, service now asks for another usable platform | delete old, create new
    let mut s = with_meeting();
    booking(&mut s).meeting_platform = Some("jitsi".into());
    add(
        "service now asks for another usable platform: replace",
        s,
        Decision::Replace { old: "meetingd10g1".into(), platform: Platform::Jitsi, generation: 2 },
    );
    let mut s = with_meeting();
    booking(&mut s).meeting_platform = Some("zoom".into());
    add(
        "service now asks for a platform not offered here: replace on the fallback",
        s,
        Decision::Replace { old: "meetingd10g1".into(), platform: Platform::Jitsi, generation: 2 },
    );
    let mut s = with_meeting();
    booking(&mut s).meeting_platform = Some("zoom".into());
    without_fallback.push((
        "service now asks for a platform not offered here, no fallback: keep the working link",
        s,
        Fallback::None,
        Decision::Keep { generation: 1 },
    ));

    // completed | any | leave as is
    let mut s = with_meeting();
    booking(&mut s).status = "completed".into();
    add("completed with a meeting: leave as is", s, Decision::LeaveAsIs);
    let mut s = snapshot();
    booking(&mut s).status = "completed".into();
    add("completed without a meeting: leave as is", s, Decision::LeaveAsIs);

    // pending / cancelled / rejected / deleted / in-person / manual | live | delete
    for status in ["pending", "cancelled", "rejected"] {
        let mut s = with_meeting();
        booking(&mut s).status = status.into();
        add(status, s, delete_recorded());
    }
    let mut s = with_meeting();
    s.booking = None;
    add("booking deleted, meeting live: delete", s, delete_recorded());
    let mut s = with_meeting();
    booking(&mut s).is_online = false;
    add("service now in person, meeting live: delete", s, delete_recorded());
    let mut s = with_meeting();
    booking(&mut s).meeting_status = Some("manual".into());
    add("booking marked manual, meeting live: delete", s, delete_recorded());

    // same | none | nothing
    for status in ["pending", "cancelled", "rejected"] {
        let mut s = snapshot();
        booking(&mut s).status = status.into();
        add(status, s, Decision::Nothing);
    }
    let mut s = snapshot();
    s.booking = None;
    add("booking deleted, no meeting: nothing", s, Decision::Nothing);
    let mut s = snapshot();
    booking(&mut s).is_online = false;
    add("in person, no meeting: nothing", s, Decision::Nothing);
    let mut s = snapshot();
    booking(&mut s).meeting_status = Some("manual".into());
    add("manual, no meeting: nothing", s, Decision::Nothing);

    // confirmed but ends before it starts, has no times, no provider, or unknown platform | fail
    let mut s = snapshot();
    booking(&mut s).end = Some(start() - Duration::minutes(1));
    add("ends before it starts", s, Decision::Fail("before it starts"));
    let mut s = snapshot();
    booking(&mut s).end = Some(start());
    add("ends when it starts", s, Decision::Fail("before it starts"));
    let mut s = snapshot();
    booking(&mut s).start = None;
    add("no start time", s, Decision::Fail("has no start or end time"));
    let mut s = snapshot();
    booking(&mut s).end = None;
    add("no end time", s, Decision::Fail("has no start or end time"));
    let mut s = snapshot();
    booking(&mut s).provider_id = None;
    add("no provider", s, Decision::Fail("has no provider"));
    let mut s = snapshot();
    booking(&mut s).meeting_platform = Some("skype".into());
    add("unknown platform", s, Decision::Fail("not one meetingd knows"));
    let mut s = snapshot();
    booking(&mut s).connected = false;
    without_fallback.push((
        "not connected, no fallback",
        s,
        Fallback::None,
        Decision::Fail("has not connected Google Meet"),
    ));
    let mut s = snapshot();
    booking(&mut s).meeting_platform = Some("zoom".into());
    without_fallback.push((
        "platform not offered, no fallback",
        s,
        Fallback::None,
        Decision::Fail("Zoom meetings are not available"),
    ));

    // any, but a column cannot be read | fail with a sentence naming it
    let mut s = with_meeting();
    booking(&mut s).unreadable = Some("the booking's status cannot be read (error)".into());
    add(
        "a column cannot be read",
        s,
        Decision::Fail("meetingd cannot read this booking: the booking's status cannot be read"),
    );

    // confirmed, online, its service now has another provider | live | delete old, create new
    let mut s = with_meeting();
    s.meeting.as_mut().unwrap().owner = Some(Uuid::from_u128(99));
    add(
        "service now has another provider: replace in the new provider's account",
        s,
        Decision::Replace { old: "meetingd10g1".into(), platform: Platform::GoogleMeet, generation: 2 },
    );

    // confirmed, a meeting_link meetingd did not write | live | delete (the booking is manual)
    let mut s = with_meeting();
    booking(&mut s).meeting_link = Some("https://example.com/my-own-room".into());
    add("a link meetingd did not write: delete", s, delete_recorded());
    let mut s = snapshot();
    booking(&mut s).meeting_link = Some("https://example.com/my-own-room".into());
    add("a link meetingd did not write, no meeting: nothing", s, Decision::Nothing);

    cases.extend(without_fallback);
    cases
}

#[test]
fn plan_follows_the_table() {
    let cases = table();
    assert!(cases.len() >= 30, "every row of the table has its cases");
    for (name, s, fallback, want) in cases {
        assert_eq!(decide(&s, fallback), want, "{name}");
    }
}

/// A create intent recorded on the job (platform, generation, owner, account).
fn intent(platform: &str, generation: i32, integration_id: Uuid) -> Intent {
    Intent {
        platform: platform.into(),
        generation,
        owner: Some(provider()),
        account: Some(Account { user_id: provider(), integration_id, identity: None }),
    }
}

fn with_intent(mut s: Snapshot, i: Intent) -> Snapshot {
    s.claim.intended_generation = i.generation;
    s.claim.intent = Some(i);
    s
}

/// "A recorded create intent that the chosen action does not adopt (same platform, generation
/// and account) is deleted at its platform … before the action runs."
#[test]
fn a_create_intent_is_adopted_only_on_its_platform_in_its_account() {
    // Same platform, same account: the create reuses the intent's generation (the platform adopts it).
    let s = with_intent(snapshot(), intent("google_meet", 3, integration()));
    let p = plan(&s, available, FALLBACK);
    assert!(matches!(&p, Plan::Create { req, .. } if req.generation == 3), "{p:?}");
    assert!(p.reuses(s.claim.intent.as_ref().unwrap()));

    // Another platform: a new generation past the intent's, and the intent is not adopted.
    let mut s = with_intent(snapshot(), intent("google_meet", 3, integration()));
    booking(&mut s).meeting_platform = Some("jitsi".into());
    let p = plan(&s, available, FALLBACK);
    assert!(
        matches!(&p, Plan::Create { choice, req } if choice.platform == Platform::Jitsi && req.generation == 4),
        "{p:?}"
    );
    assert!(!p.reuses(s.claim.intent.as_ref().unwrap()));

    // Another account (the provider reconnected another integration row): not adopted.
    let s = with_intent(snapshot(), intent("google_meet", 3, Uuid::from_u128(77)));
    let p = plan(&s, available, FALLBACK);
    assert!(matches!(&p, Plan::Create { req, .. } if req.generation == 4), "{p:?}");
    assert!(!p.reuses(s.claim.intent.as_ref().unwrap()));

    // Same integration row, but another identity at the platform: not adopted.
    let mut i = intent("google_meet", 3, integration());
    i.account.as_mut().unwrap().identity = Some("old@example.com".into());
    let mut s = with_intent(snapshot(), i);
    booking(&mut s).integration.as_mut().unwrap().identity = Some("new@example.com".into());
    let p = plan(&s, available, FALLBACK);
    assert!(matches!(&p, Plan::Create { req, .. } if req.generation == 4), "{p:?}");

    // Made for another provider: not adopted.
    let mut i = intent("google_meet", 3, integration());
    i.owner = Some(Uuid::from_u128(99));
    let s = with_intent(snapshot(), i);
    assert!(matches!(plan(&s, available, FALLBACK), Plan::Create { req, .. } if req.generation == 4));

    // No older than the recorded meeting: not adopted, and the next generation is past both.
    let mut s = with_intent(with_meeting(), intent("google_meet", 1, integration()));
    s.meeting.as_mut().unwrap().live = false;
    booking(&mut s).meeting_link = None;
    assert!(matches!(plan(&s, available, FALLBACK), Plan::Create { req, .. } if req.generation == 2));

    // A booking that no longer wants a meeting adopts nothing: the intent's meeting is deleted first.
    let mut s = with_intent(snapshot(), intent("google_meet", 3, integration()));
    booking(&mut s).status = "cancelled".into();
    let p = plan(&s, available, FALLBACK);
    assert!(matches!(p, Plan::Record(Outcome::Unlinked { deleted: false })), "{p:?}");
    assert!(!p.reuses(s.claim.intent.as_ref().unwrap()));

    // A replacement on the intent's platform adopts it too.
    let mut s = with_intent(with_meeting(), intent("jitsi", 3, integration()));
    booking(&mut s).meeting_platform = Some("jitsi".into());
    let p = plan(&s, available, FALLBACK);
    assert!(matches!(&p, Plan::Replace { req, .. } if req.generation == 3), "{p:?}");
    assert!(p.reuses(s.claim.intent.as_ref().unwrap()));
}
