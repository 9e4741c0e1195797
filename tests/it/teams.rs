//! Microsoft Teams end to end against the fake Microsoft identity platform and Graph: create,
//! move, delete, the `externalId` that makes a create exactly-once, throttling, rotating refresh
//! tokens, a revoked grant, options and the mailbox's concurrency limit.

use std::time::Duration;

use meetingd::config::Config;
use meetingd::providers::Platform;
use meetingd::providers::teams::external_id;
use meetingd::worker::Worker;
use meetingd_testkit::db::{Seeded, TestDb};
use meetingd_testkit::fake_graph::{self, Fail, FakeGraph};
use meetingd_testkit::market::{self, Market, job, make_due, meeting};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::google::worker_for;

struct T {
    _db: TestDb,
    c: tokio_postgres::Client,
    m: Market,
    graph: FakeGraph,
    config: Config,
    worker: Worker,
    service: Uuid,
}

/// Stores a Teams connection for `user` as meetingd's connect flow would (tokens encrypted).
async fn connect_teams(config: &Config, user: Uuid, access: &str, refresh: &str, expires_in_secs: i64) {
    let (id, email) = (fake_graph::WORK_USER_ID, fake_graph::WORK_EMAIL);
    let new = market::connection(Platform::Teams, user, access, refresh, expires_in_secs, Some(id), email);
    market::store_connection(config, new).await;
}

async fn setup_with(expires_in_secs: i64, adjust: impl FnOnce(&mut Config)) -> T {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let graph = FakeGraph::start().await;
    graph.configure(&mut config);
    adjust(&mut config);
    let service = market::service(&c, m.provider, true, Some("teams")).await;
    let (access, refresh) = graph.issue();
    connect_teams(&config, m.provider, &access, &refresh, expires_in_secs).await;
    let worker = worker_for(&config);
    T { _db: db, c, m, graph, config, worker, service }
}

async fn setup() -> T {
    setup_with(3600, |_| {}).await
}

impl T {
    async fn book(&self) -> Uuid {
        market::book(&self.c, self.service, self.m.customer, "confirmed").await
    }

    /// Gives the service `settings`, books and runs: the booking, linked, and its meeting at Graph.
    async fn linked_with(&self, settings: serde_json::Value) -> (Uuid, fake_graph::StoredMeeting) {
        self.c
            .execute("UPDATE services SET meeting_settings = $2 WHERE id = $1", &[&self.service, &settings])
            .await
            .unwrap();
        let b = self.book().await;
        self.run().await;
        let state = meeting(&self.c, b).await;
        assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
        (b, self.graph.meeting(state.meeting_id.as_deref().unwrap()).unwrap())
    }

    async fn run(&self) {
        self.worker.run_once().await.unwrap();
    }

    async fn teams_active(&self) -> bool {
        self.c
            .query_one("SELECT is_active FROM user_meeting_integrations WHERE platform = 'teams'", &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn booking_times(&self, b: Uuid) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
        let r = self.c.query_one("SELECT start_time, end_time FROM bookings WHERE id = $1", &[&b]).await.unwrap();
        let second = |t: chrono::DateTime<chrono::Utc>| chrono::SubsecRound::trunc_subsecs(t, 0);
        (second(r.get(0)), second(r.get(1)))
    }
}

fn time_of(meeting: &fake_graph::StoredMeeting, key: &str) -> chrono::DateTime<chrono::Utc> {
    meeting.body[key].as_str().unwrap().parse().unwrap()
}

fn creates(graph: &FakeGraph) -> usize {
    graph.calls().iter().filter(|c| c.starts_with("createOrGet")).count()
}

#[tokio::test]
async fn confirmed_booking_gets_a_teams_link_that_follows_reschedule_and_cancel() {
    let t = setup().await;
    let b = t.book().await;
    t.run().await;
    let state = meeting(&t.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("teams")), "{state:?}");
    let link = state.link.clone().unwrap();
    assert!(link.starts_with("https://teams.microsoft.com/l/meetup-join/"), "{link}");
    let id = state.meeting_id.clone().unwrap();
    let stored = t.graph.meeting(&id).unwrap();
    assert_eq!(stored.body["externalId"], external_id(b, 1));
    assert_eq!(stored.body["subject"], "Consultation with Test User");
    assert_eq!((time_of(&stored, "startDateTime"), time_of(&stored, "endDateTime")), t.booking_times(b).await);
    assert_eq!(t.graph.calls(), [format!("createOrGet {}", external_id(b, 1))], "one call, no move");

    // Reschedule: the same meeting moved (both times), the same link.
    market::reschedule_hours(&t.c, b, 2).await;
    t.run().await;
    let moved = meeting(&t.c, b).await;
    assert_eq!((moved.meeting_id.as_deref(), moved.link.as_deref()), (Some(id.as_str()), Some(link.as_str())));
    let stored = t.graph.meeting(&id).unwrap();
    assert_eq!((time_of(&stored, "startDateTime"), time_of(&stored, "endDateTime")), t.booking_times(b).await);
    assert_eq!(creates(&t.graph), 1, "a reschedule makes no new meeting");

    // Cancel: deleted.
    market::set_status(&t.c, b, "cancelled").await;
    t.run().await;
    assert!(t.graph.live_meetings().is_empty());
    assert_eq!(meeting(&t.c, b).await.link, None);
}

#[tokio::test]
async fn a_lost_create_answer_ends_with_the_one_meeting_graph_answers_again() {
    let t = setup().await;
    t.graph.fail_next([Fail::lost_answer()]);
    let b = t.book().await;
    t.run().await;
    assert_eq!(job(&t.c, b).await.unwrap().state, "pending");
    assert_eq!(t.graph.live_meetings().len(), 1, "Graph made the meeting; meetingd never heard back");
    make_due(&t.c).await;
    t.run().await;
    let state = meeting(&t.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = t.graph.live_meetings();
    assert_eq!(live.len(), 1, "{:?}", t.graph.calls());
    assert_eq!(state.meeting_id.as_deref(), live[0].body["id"].as_str());
}

#[tokio::test]
async fn a_lost_create_answer_then_a_reschedule_moves_the_meeting_createorget_answers() {
    let t = setup().await;
    t.graph.fail_next([Fail::lost_answer()]);
    let b = t.book().await;
    t.run().await;
    market::reschedule_hours(&t.c, b, 3).await;
    t.run().await;
    let state = meeting(&t.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = t.graph.live_meetings();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (time_of(&live[0], "startDateTime"), time_of(&live[0], "endDateTime")),
        t.booking_times(b).await,
        "createOrGet does not move a meeting: meetingd does"
    );
}

#[tokio::test]
async fn a_lost_create_answer_then_a_cancel_deletes_the_meeting_of_the_intent() {
    let t = setup().await;
    t.graph.fail_next([Fail::lost_answer()]);
    let b = t.book().await;
    t.run().await;
    assert_eq!(t.graph.live_meetings().len(), 1);
    market::set_status(&t.c, b, "cancelled").await;
    t.run().await;
    assert!(
        t.graph.live_meetings().is_empty(),
        "the recorded intent's meeting is found and deleted: {:?}",
        t.graph.calls()
    );
    assert_eq!(job(&t.c, b).await.unwrap().state, "done");
    // Confirmed again: a new generation, so a new externalId (never one whose meeting was deleted).
    market::set_status(&t.c, b, "confirmed").await;
    t.run().await;
    let live = t.graph.live_meetings();
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].body["externalId"], external_id(b, 1));
}

#[tokio::test]
async fn throttling_is_retried_after_its_retry_after_and_404_on_delete_counts_as_deleted() {
    let t = setup().await;
    for status in [429, 503] {
        t.graph.fail_next([Fail::throttled(status, "7")]);
        let b = t.book().await;
        t.run().await;
        let j = job(&t.c, b).await.unwrap();
        assert_eq!(j.state, "pending", "{status}: {j:?}");
        assert!(j.due_later, "{status}: waits for Retry-After");
        make_due(&t.c).await;
        t.run().await;
        assert_eq!(meeting(&t.c, b).await.status.as_deref(), Some("ready"));
        // Deleted in Teams by someone else; the cancel's DELETE answers 404.
        let id = meeting(&t.c, b).await.meeting_id.unwrap();
        t.graph.state.lock().unwrap().meetings.values_mut().find(|m| m.body["id"] == id.as_str()).unwrap().deleted =
            true;
        market::set_status(&t.c, b, "cancelled").await;
        t.run().await;
        assert_eq!(job(&t.c, b).await.unwrap().state, "done");
    }
}

#[tokio::test]
async fn an_invalid_token_refreshes_once_and_the_newest_refresh_token_is_kept() {
    let t = setup().await;
    let (first_access, first_refresh) = {
        let s = t.graph.all_secrets();
        (
            s.iter().find(|x| x.contains("access")).unwrap().clone(),
            s.iter().find(|x| x.contains("refresh")).unwrap().clone(),
        )
    };
    t.graph.expire_access(&first_access);
    let b = t.book().await;
    t.run().await;
    assert_eq!(meeting(&t.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(t.graph.refresh_calls(), 1);
    // The stored refresh token is the rotated one.
    let keyring = t.config.encryption.keyring().unwrap();
    let r =
        t.c.query_one("SELECT id, refresh_token FROM user_meeting_integrations WHERE platform = 'teams'", &[])
            .await
            .unwrap();
    let owner = meetingd::crypto::Owner { user_id: t.m.provider, platform: "teams" };
    let stored =
        keyring.decrypt(&r.get::<_, String>(1), r.get(0), meetingd::crypto::Column::RefreshToken(owner)).unwrap();
    assert_ne!(stored.expose_secret(), first_refresh, "the newest refresh token is stored");
    assert!(stored.expose_secret().contains("teams-refresh"));
}

#[tokio::test]
async fn a_grant_revoked_at_microsoft_deactivates_tells_the_provider_and_falls_back() {
    for (error, code) in [("invalid_grant", 700082), ("invalid_grant", 50173), ("interaction_required", 50076)] {
        let t = setup_with(60, |_| {}).await;
        t.graph.fail_next_refresh(error, code);
        let b = t.book().await;
        t.run().await;
        assert!(!t.teams_active().await, "{error} {code}: the provider must reconnect");
        let state = meeting(&t.c, b).await;
        assert_eq!(state.platform.as_deref(), Some("jitsi"), "{error} {code}: {state:?}");
        let told =
            market::count(&t.c, "SELECT count(*) FROM meetingd.events WHERE kind = 'integration_needs_reconnect'")
                .await;
        assert_eq!(told, 1);
    }
    // A passing outage is not a revocation.
    let t = setup_with(60, |_| {}).await;
    t.graph.fail_next_refresh("temporarily_unavailable", 50196);
    let b = t.book().await;
    t.run().await;
    assert!(t.teams_active().await);
    assert_eq!(job(&t.c, b).await.unwrap().state, "pending");
}

#[tokio::test]
async fn an_account_without_teams_fails_with_a_sentence() {
    let t = setup().await;
    t.graph.fail_next([Fail::new(403, "Forbidden")]);
    let b = t.book().await;
    t.run().await;
    let state = meeting(&t.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"), "{state:?}");
    assert!(state.error.as_deref().unwrap_or_default().contains("licence"), "{state:?}");
}

#[tokio::test]
async fn options_are_applied_and_what_teams_cannot_do_is_reported() {
    let t = setup().await;
    let (b, stored) = t
        .linked_with(
            serde_json::json!({"waiting_room": true, "recording": "cloud", "passcode": true, "mute_on_entry": true}),
        )
        .await;
    assert_eq!(stored.body["lobbyBypassSettings"]["scope"], "organizer");
    assert_eq!(stored.body["recordAutomatically"], true);
    assert_eq!(stored.body["joinMeetingIdSettings"]["isPasscodeRequired"], true);
    let details = market::audit_details(&t.c, b, "meeting.create").await;
    let detail = details.join("; ");
    assert!(detail.contains("mute_on_entry") && !detail.contains("waiting_room"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_more_than_four_calls_are_in_flight_per_mailbox() {
    let t = setup_with(3600, |c| {
        c.worker.concurrency = 12;
        c.limits.teams.integration_rate = 1000.0;
        c.limits.teams.integration_burst = 1000;
    })
    .await;
    t.graph.slow_answers(Duration::from_millis(150));
    let worker = worker_for(&t.config);
    let mut bookings = Vec::new();
    for _ in 0..10 {
        bookings.push(t.book().await);
    }
    worker.run_once().await.unwrap();
    for b in &bookings {
        assert_eq!(meeting(&t.c, *b).await.status.as_deref(), Some("ready"));
    }
    let most = t.graph.most_in_flight();
    assert!((2..=4).contains(&most), "at most 4 Graph calls at once for one mailbox (and more than one): {most}");
}

#[tokio::test]
async fn no_log_line_or_row_ever_contains_a_token() {
    let (captured, _guard) = meetingd_testkit::logs::capture_trace();
    // A refresh, a lost create answer, a move, a cancel of an unanswered create, a failure.
    let t = setup_with(60, |_| {}).await;
    let b = t.book().await;
    t.run().await;
    t.graph.fail_next([Fail::lost_answer()]);
    let b2 = t.book().await;
    t.run().await;
    market::reschedule_hours(&t.c, b, 1).await;
    market::set_status(&t.c, b2, "cancelled").await;
    t.run().await;
    t.graph.fail_next([Fail::new(400, "BadRequest")]);
    let b3 = t.book().await;
    t.run().await;
    assert_eq!(meeting(&t.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(meeting(&t.c, b3).await.status.as_deref(), Some("failed"));
    assert!(t.graph.refresh_calls() >= 1);

    let text = captured.text();
    assert!(text.lines().count() > 20, "the capture works: {text}");
    for secret in t.graph.all_secrets().iter().chain([&fake_graph::CLIENT_SECRET.to_string()]) {
        assert!(!text.contains(secret.as_str()), "a log line contains a secret ({secret})");
    }
    assert!(!text.contains("-secret"), "{text}");
    let dump: String =
        t.c.query_one(
            "SELECT concat_ws(' ', (SELECT string_agg(j::text, ' ') FROM meetingd.jobs j),
                                   (SELECT string_agg(a::text, ' ') FROM meetingd.audit_log a),
                                   (SELECT string_agg(e::text, ' ') FROM meetingd.events e))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains("-secret"), "{dump}");
}

#[tokio::test]
async fn local_recording_is_reported_as_not_applied() {
    let t = setup().await;
    let (b, stored) = t.linked_with(serde_json::json!({"recording": "local", "waiting_room": false})).await;
    assert_eq!(stored.body["recordAutomatically"], false);
    let details = market::audit_details(&t.c, b, "meeting.create").await;
    let detail = details.join("; ");
    assert!(detail.contains("not supported by Microsoft Teams: recording"), "{detail}");
}
