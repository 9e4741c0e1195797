//! Zoom end to end against the fake Zoom: create, move, delete, the marker that makes a create
//! exactly-once without an idempotency key, token refresh with rotation, and Zoom's error codes.

use meetingd::config::Config;
use meetingd::providers::Platform;
use meetingd::providers::zoom::{Marks, unsealed_mark};
use meetingd::worker::Worker;
use meetingd_testkit::db::{Seeded, TestDb};
use meetingd_testkit::fake_zoom::{self, Fail, FakeZoom};
use meetingd_testkit::market::{self, Market, job, make_due, meeting};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::google::worker_for;

struct Z {
    _db: TestDb,
    c: tokio_postgres::Client,
    m: Market,
    zoom: FakeZoom,
    config: Config,
    worker: Worker,
    service: Uuid,
}

/// Stores a Zoom connection for `user` as meetingd's connect flow would (tokens encrypted).
async fn connect_zoom(config: &Config, user: Uuid, access: &str, refresh: &str, expires_in_secs: i64) {
    let new = market::connection(
        Platform::Zoom,
        user,
        access,
        refresh,
        expires_in_secs,
        Some("hostAbc123"),
        "provider@example.com",
    );
    market::store_connection(config, new).await;
}

async fn setup_with(expires_in_secs: i64) -> Z {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let zoom = FakeZoom::start().await;
    zoom.configure(&mut config);
    let service = market::service(&c, m.provider, true, Some("zoom")).await;
    let (access, refresh) = zoom.issue();
    connect_zoom(&config, m.provider, &access, &refresh, expires_in_secs).await;
    let worker = worker_for(&config);
    Z { _db: db, c, m, zoom, config, worker, service }
}

async fn setup() -> Z {
    setup_with(3600).await
}

impl Z {
    async fn book(&self) -> Uuid {
        market::book(&self.c, self.service, self.m.customer, "confirmed").await
    }

    async fn run(&self) {
        self.worker.run_once().await.unwrap();
    }

    /// Whether the provider's Zoom integration is still active.
    async fn zoom_active(&self) -> bool {
        self.c
            .query_one("SELECT is_active FROM user_meeting_integrations WHERE platform = 'zoom'", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The marks meetingd's key reads.
    fn marks(&self) -> Marks {
        Marks::new(std::sync::Arc::new(self.config.encryption.keyring().unwrap()))
    }

    /// Whether the stored meeting's agenda marks the `generation`th meeting of `booking`.
    fn marked(&self, m: &fake_zoom::StoredMeeting, booking: Uuid, generation: i32) -> bool {
        m.body["agenda"].as_str().is_some_and(|a| self.marks().names(a, booking, generation))
    }

    /// The booking's start in whole seconds (Zoom's precision).
    async fn booking_start(&self, b: Uuid) -> chrono::DateTime<chrono::Utc> {
        let start: chrono::DateTime<chrono::Utc> =
            self.c.query_one("SELECT start_time FROM bookings WHERE id = $1", &[&b]).await.unwrap().get(0);
        chrono::SubsecRound::trunc_subsecs(start, 0)
    }
}

fn creates(zoom: &FakeZoom) -> usize {
    zoom.calls().iter().filter(|c| *c == "create").count()
}

#[tokio::test]
async fn confirmed_booking_gets_a_zoom_link_that_follows_reschedule_and_cancel() {
    let z = setup().await;
    let b = z.book().await;
    z.run().await;

    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(state.platform.as_deref(), Some("zoom"));
    let link = state.link.clone().unwrap();
    assert!(link.starts_with("https://us05web.zoom.us/j/"), "{link}");
    let id = state.meeting_id.clone().unwrap();
    assert!(id.bytes().all(|c| c.is_ascii_digit()), "{id}");
    let stored = z.zoom.meeting(&id).unwrap();
    assert_eq!(stored.body["type"], 2);
    assert_eq!(stored.body["topic"], "Consultation with Test User");
    let agenda = stored.body["agenda"].as_str().unwrap();
    assert!(agenda.starts_with("[meetingd ") && z.marks().read(agenda) == Some((b, 1)), "{agenda}");
    let start: chrono::DateTime<chrono::Utc> = stored.body["start_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(start, z.booking_start(b).await);
    assert_eq!(creates(&z.zoom), 1);
    assert!(!z.zoom.calls().iter().any(|c| c.starts_with("list")), "a first create lists nothing");

    market::reschedule_hours(&z.c, b, 2).await;
    z.run().await;
    let moved = z.zoom.meeting(&id).unwrap();
    let start: chrono::DateTime<chrono::Utc> = moved.body["start_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(start, z.booking_start(b).await);
    let state = meeting(&z.c, b).await;
    assert_eq!(state.link.as_deref(), Some(link.as_str()), "the link stays on reschedule");
    assert_eq!(state.meeting_id.as_deref(), Some(id.as_str()));
    assert!(z.zoom.calls().contains(&format!("patch {id}")), "{:?}", z.zoom.calls());
    assert_eq!(creates(&z.zoom), 1);

    market::set_status(&z.c, b, "cancelled").await;
    z.run().await;
    assert!(z.zoom.meeting(&id).unwrap().deleted);
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("deleted"));
    assert!(z.zoom.live_meetings().is_empty());
}

#[tokio::test]
async fn a_lost_create_answer_ends_with_one_meeting_adopted_by_its_marker() {
    let z = setup().await;
    // A few other meetings, listed over several pages before the lost one.
    for n in 0..3 {
        z.zoom.plant(&format!("someone else's {n}"), "", "2027-01-01T10:00:00Z", 30);
    }
    z.zoom.page_limit(2);
    z.zoom.fail_next([Fail::lost_answer()]);
    let b = z.book().await;
    z.run().await;
    assert_eq!(job(&z.c, b).await.unwrap().state, "pending");
    assert_eq!(meeting(&z.c, b).await.link, None);
    assert_eq!(z.zoom.live_meetings().len(), 4, "Zoom made the meeting; meetingd never heard back");

    make_due(&z.c).await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(creates(&z.zoom), 1, "the meeting was adopted, not made again: {:?}", z.zoom.calls());
    let ours: Vec<_> = z.zoom.live_meetings().into_iter().filter(|m| z.marked(m, b, 1)).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(state.meeting_id, Some(ours[0].body["id"].to_string()));
    assert_eq!(state.link.as_deref(), ours[0].body["join_url"].as_str());
    let lists = z.zoom.calls().iter().filter(|c| c.starts_with("list")).count();
    assert!(lists >= 2, "every page is read: {:?}", z.zoom.calls());
}

#[tokio::test]
async fn a_lost_create_answer_for_a_booking_that_has_begun_is_still_adopted() {
    // The booking began ten minutes ago: its meeting is no longer "upcoming" at Zoom, yet it
    // exists, and a second create would leave two.
    let z = setup().await;
    let b = z.book().await;
    z.c.execute(
        "UPDATE bookings SET start_time = now() - interval '10 minutes', end_time = now() + interval '50 minutes' WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    z.zoom.fail_next([Fail::lost_answer()]);
    z.run().await;
    assert_eq!(z.zoom.live_meetings().len(), 1, "Zoom made the meeting; meetingd never heard back");
    make_due(&z.c).await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(creates(&z.zoom), 1, "adopted, not made again: {:?}", z.zoom.calls());
    assert_eq!(z.zoom.live_meetings().len(), 1);
}

#[tokio::test]
async fn a_meeting_marked_before_marks_were_sealed_is_still_adopted() {
    let z = setup().await;
    z.zoom.fail_next([Fail::lost_answer()]);
    let b = z.book().await;
    z.run().await;
    // The meeting an earlier version made carries the unsealed mark.
    {
        let mut s = z.zoom.state.lock().unwrap();
        let made = s.meetings.values_mut().next().unwrap();
        made.body["agenda"] = unsealed_mark(b, 1).into();
    }
    make_due(&z.c).await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(creates(&z.zoom), 1, "adopted, not made again: {:?}", z.zoom.calls());
    assert_eq!(z.zoom.live_meetings().len(), 1);
}

#[tokio::test]
async fn the_reconcile_sweep_reads_zoom_marks_deletes_strays_and_remakes_what_vanished() {
    let z = setup().await;
    let b = z.book().await;
    let vanishing = z.book().await;
    z.run().await;
    let (ours, lost) = (meeting(&z.c, b).await.meeting_id.unwrap(), meeting(&z.c, vanishing).await.meeting_id.unwrap());
    let start = (chrono::Utc::now() + chrono::Duration::days(2)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    // Leaks: a meeting for a booking that no longer exists, a second one for a booking that has
    // its own; and meetings that are not meetingd's to judge: the provider's own, one whose mark
    // is not sealed (made before marks were), one with a forged mark.
    let marks = z.marks();
    let nobody = z.zoom.plant("leak", &marks.seal(Uuid::new_v4(), 1), &start, 30);
    let second = z.zoom.plant("leak", &format!("{}\n\nnotes", marks.seal(b, 7)), &start, 30);
    let own = z.zoom.plant("Team call", "weekly", &start, 30);
    let old = z.zoom.plant("old", &unsealed_mark(Uuid::new_v4(), 1), &start, 30);
    let forged = z.zoom.plant("forged", &format!("[meetingd {}:1]", Uuid::new_v4()), &start, 30);
    // Deleted in Zoom by someone else; and the provider rewrote the agenda of the other (its
    // mark gone), which is still there, not vanished.
    {
        let mut s = z.zoom.state.lock().unwrap();
        s.meetings.get_mut(&lost.parse().unwrap()).unwrap().deleted = true;
        s.meetings.get_mut(&ours.parse().unwrap()).unwrap().body["agenda"] = "Rewritten by the provider".into();
    }

    let looked = crate::leftovers::sweep_with(&z.config, true).await;
    let mut strays: Vec<String> = looked.strays.iter().map(|(id, _)| id.clone()).collect();
    strays.sort();
    let mut want = vec![nobody.clone(), second.clone()];
    want.sort();
    assert_eq!(strays, want, "{looked:?}");
    assert_eq!(looked.vanished, vec![vanishing]);
    assert_eq!(looked.deleted, 0);

    let done = crate::leftovers::sweep_with(&z.config, false).await;
    assert_eq!((done.deleted, done.vanished.len()), (2, 1), "{done:?}");
    let gone = |id: &str| z.zoom.meeting(id).is_none_or(|m| m.deleted);
    assert!(gone(&nobody) && gone(&second));
    for kept in [&ours, &own, &old, &forged] {
        assert!(!gone(kept), "meeting {kept} stays");
    }
    z.run().await;
    let remade = meeting(&z.c, vanishing).await;
    assert_eq!(remade.status.as_deref(), Some("ready"), "{remade:?}");
    assert_ne!(remade.meeting_id.as_deref(), Some(lost.as_str()), "a new meeting for the vanished one");
    assert_eq!(crate::leftovers::sweep_with(&z.config, false).await.strays.len(), 0, "a second sweep finds nothing");
}

#[tokio::test]
async fn a_lost_create_answer_then_a_cancel_deletes_the_meeting_by_its_marker() {
    let z = setup().await;
    z.zoom.fail_next([Fail::lost_answer()]);
    let b = z.book().await;
    z.run().await;
    assert_eq!(z.zoom.live_meetings().len(), 1);

    market::set_status(&z.c, b, "cancelled").await;
    z.run().await;
    assert!(z.zoom.live_meetings().is_empty(), "the recorded intent lets the cancel find the meeting");
    assert_eq!(job(&z.c, b).await.unwrap().state, "done");
}

#[tokio::test]
async fn two_meetings_with_the_marker_end_as_one() {
    let z = setup().await;
    z.zoom.fail_next([Fail::lost_answer()]);
    let b = z.book().await;
    z.run().await;
    // A second create of the same (booking, generation) reached Zoom too (say, a racing daemon
    // whose answer was lost as well).
    let first = z.zoom.live_meetings().remove(0);
    let agenda = first.body["agenda"].as_str().unwrap().to_string();
    let start = first.body["start_time"].as_str().unwrap().to_string();
    let duration = first.body["duration"].as_i64().unwrap();
    z.zoom.plant("Consultation with Test User", &agenda, &start, duration);
    assert_eq!(z.zoom.live_meetings().len(), 2);

    make_due(&z.c).await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = z.zoom.live_meetings();
    assert_eq!(live.len(), 1, "one of the two was deleted");
    assert_eq!(state.meeting_id, Some(live[0].body["id"].to_string()));
    assert_eq!(creates(&z.zoom), 1);
}

#[tokio::test]
async fn a_lost_create_answer_then_a_reschedule_adopts_and_moves_the_meeting() {
    let z = setup().await;
    z.zoom.fail_next([Fail::lost_answer()]);
    let b = z.book().await;
    z.run().await;
    market::reschedule_hours(&z.c, b, 3).await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = z.zoom.live_meetings();
    assert_eq!(live.len(), 1);
    let start: chrono::DateTime<chrono::Utc> = live[0].body["start_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(start, z.booking_start(b).await, "the adopted meeting moved with the booking");
}

#[tokio::test]
async fn code_124_refreshes_once_with_basic_auth_and_stores_the_rotated_refresh_token() {
    let z = setup().await;
    let before: String =
        z.c.query_one("SELECT refresh_token FROM user_meeting_integrations WHERE platform = 'zoom'", &[])
            .await
            .unwrap()
            .get(0);
    z.zoom.fail_next([Fail::invalid_token()]);
    let b = z.book().await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(z.zoom.refresh_calls(), 1);
    assert_eq!(z.zoom.state.lock().unwrap().refresh_without_basic, 0, "Zoom's token endpoint wants HTTP Basic");
    let after: String =
        z.c.query_one("SELECT refresh_token FROM user_meeting_integrations WHERE platform = 'zoom'", &[])
            .await
            .unwrap()
            .get(0);
    assert_ne!(before, after, "the rotated refresh token replaced the dead one");

    // The next refresh uses the rotated token (the first one is dead at Zoom).
    for token in z.zoom.issued_access_tokens() {
        z.zoom.expire_access(&token);
    }
    market::reschedule_hours(&z.c, b, 1).await;
    z.run().await;
    assert_eq!(z.zoom.refresh_calls(), 2);
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let active = z.zoom_active().await;
    assert!(active);
}

#[tokio::test]
async fn a_lost_refresh_answer_ends_as_must_reconnect_and_the_fallback() {
    // Zoom rotated the refresh token, but meetingd never saw the new one: the stored one is dead.
    let z = setup_with(60).await;
    z.zoom.lose_next_refresh_answer();
    let b = z.book().await;
    z.run().await;
    assert_eq!(job(&z.c, b).await.unwrap().state, "pending", "a lost answer is retried");
    make_due(&z.c).await;
    z.run().await;
    assert_eq!(z.zoom.refresh_calls(), 2, "the dead refresh token is tried once more, never again");
    let active = z.zoom_active().await;
    assert!(!active, "the provider must reconnect Zoom");
    let state = meeting(&z.c, b).await;
    assert_eq!(state.platform.as_deref(), Some("jitsi"), "{state:?}");
    let told =
        market::count(&z.c, "SELECT count(*) FROM meetingd.events WHERE kind = 'integration_needs_reconnect'").await;
    assert_eq!(told, 1, "the provider is told");
}

#[tokio::test]
async fn code_3001_on_delete_counts_as_deleted() {
    let z = setup().await;
    let b = z.book().await;
    z.run().await;
    let id = meeting(&z.c, b).await.meeting_id.unwrap();
    z.zoom.fail_next([Fail::new(404, 3001, &format!("Meeting does not exist: {id}."))]);
    market::set_status(&z.c, b, "cancelled").await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("deleted"));
    assert_eq!(job(&z.c, b).await.unwrap().state, "done");
}

#[tokio::test]
async fn rate_limits_and_3002_are_retried_later() {
    let z = setup().await;
    for fail in [Fail::rate_limited(Some("7")), Fail::rate_limited(None), Fail::daily_limit()] {
        let daily = fail.message == fake_zoom::DAILY_LIMIT_MESSAGE;
        z.zoom.fail_next([fail]);
        let b = z.book().await;
        z.run().await;
        let j = job(&z.c, b).await.unwrap();
        assert_eq!(j.state, "pending", "{j:?}");
        assert!(j.last_error.is_some_and(|e| e.contains("limit")), "retried as rate limited");
        assert_eq!(meeting(&z.c, b).await.link, None);
        if daily {
            // The next day: Zoom's daily count starts again.
            z.c.execute("DELETE FROM meetingd.platform_quota", &[]).await.unwrap();
        }
        make_due(&z.c).await;
        z.run().await;
        assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("ready"));
    }

    let b = z.book().await;
    z.run().await;
    z.zoom.fail_next([Fail::new(400, 3002, "Sorry, you cannot delete this meeting since it is in progress.")]);
    market::set_status(&z.c, b, "cancelled").await;
    z.run().await;
    assert_eq!(job(&z.c, b).await.unwrap().state, "pending", "in progress: deleted later");
    make_due(&z.c).await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("deleted"));
}

#[tokio::test]
async fn zoom_is_not_offered_without_a_client() {
    let z = setup().await;
    let mut config = z.config.clone();
    config.zoom.client_id = String::new();
    let worker = worker_for(&config);
    let b = z.book().await;
    worker.run_once().await.unwrap();
    let state = meeting(&z.c, b).await;
    assert_eq!(state.platform.as_deref(), Some("jitsi"), "{state:?}");
    assert!(z.zoom.calls().is_empty());
}

#[tokio::test]
async fn no_log_line_or_row_ever_contains_a_token_or_a_start_url() {
    let (captured, _guard) = meetingd_testkit::logs::capture_trace();

    // A refresh after 124, a lost create answer and its adoption, a move, a delete.
    let z = setup_with(60).await;
    z.zoom.fail_next([Fail::invalid_token()]);
    let b = z.book().await;
    z.run().await;
    z.zoom.fail_next([Fail::lost_answer()]);
    let b2 = z.book().await;
    z.run().await;
    make_due(&z.c).await;
    z.run().await;
    market::reschedule_hours(&z.c, b, 1).await;
    market::set_status(&z.c, b2, "cancelled").await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(meeting(&z.c, b2).await.status.as_deref(), Some("deleted"));
    assert!(z.zoom.refresh_calls() >= 1);

    let text = captured.text();
    assert!(text.lines().count() > 20, "the capture works: {text}");
    assert!(text.contains("adopted the Zoom meeting"), "{text}");
    let start_urls = z.zoom.start_urls();
    assert!(!start_urls.is_empty());
    for secret in z.zoom.all_secrets().iter().chain(&start_urls).chain([&fake_zoom::CLIENT_SECRET.to_string()]) {
        assert!(!text.contains(secret.as_str()), "a log line contains a secret ({secret})");
    }
    assert!(!text.contains("-secret") && !text.contains("zak="), "{text}");
    // Nor any row meetingd writes.
    let dump: String =
        z.c.query_one(
            "SELECT concat_ws(' ', (SELECT string_agg(b::text, ' ') FROM bookings b),
                                   (SELECT string_agg(j::text, ' ') FROM meetingd.jobs j),
                                   (SELECT string_agg(m::text, ' ') FROM meetingd.meetings m),
                                   (SELECT string_agg(a::text, ' ') FROM meetingd.audit_log a))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains("zak="), "{dump}");
    for url in &start_urls {
        assert!(!dump.contains(url.as_str()), "a row holds a start_url");
    }
}

#[tokio::test]
async fn connecting_a_zoom_account_uses_pkce_s256_basic_auth_and_learns_the_account() {
    use meetingd::providers::auth::PlatformAuth;

    let z = setup().await;
    let auth = meetingd::providers::zoom::ZoomAuth::from_config(&z.config.zoom).unwrap().unwrap();
    let redirect: url::Url = "https://meetingd.example.com/api/auth/zoom/callback".parse().unwrap();
    let authorization = auth.authorize(&redirect, "state-1");
    let code = z.zoom.consent(&authorization.url);
    let tokens = auth.client().exchange_code(&code, &authorization.pkce_verifier, &redirect).await.unwrap();
    assert_eq!(z.zoom.state.lock().unwrap().refresh_without_basic, 0);
    let granted = tokens.granted_scopes(meetingd::providers::zoom::OAUTH.scopes);
    assert!(meetingd::providers::zoom::OAUTH.missing_scopes(&granted).is_empty(), "{granted:?}");
    let identity = auth.identity(&tokens.access_token).await.unwrap();
    assert_eq!(identity.platform_user_id.as_deref(), Some("hostAbc123"));
    assert_eq!(identity.email.as_deref(), Some("provider@example.com"));

    // Disconnect revokes at Zoom, authenticated like the token endpoint.
    let refresh = tokens.refresh_token.unwrap();
    auth.client().revoke(auth.revoke_url().unwrap(), &refresh).await.unwrap();
    assert_eq!(z.zoom.revoked(), [refresh.expose_secret().to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_needing_a_refresh_refresh_once_and_never_use_the_dead_token() {
    // The stored access token is due: both daemons want a refresh at once, and Zoom's refresh
    // token dies at its first use (a second use would deactivate the integration).
    let z = setup_with(60).await;
    let other = worker_for(&z.config);
    let (b1, b2) = (z.book().await, z.book().await);
    let (r1, r2) = tokio::join!(z.worker.run_once(), other.run_once());
    r1.unwrap();
    r2.unwrap();
    make_due(&z.c).await;
    z.run().await;
    for b in [b1, b2] {
        let state = meeting(&z.c, b).await;
        assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("zoom")), "{state:?}");
    }
    assert_eq!(z.zoom.refresh_calls(), 1);
    let active = z.zoom_active().await;
    assert!(active);
}

#[tokio::test]
async fn an_integration_added_with_the_cli_gets_zoom_meetings() {
    use crate::cli::{meetingd, text};

    let z = setup().await;
    z.c.execute("DELETE FROM user_meeting_integrations", &[]).await.unwrap();
    let (access, refresh) = z.zoom.issue();
    let dir = std::env::temp_dir().join(format!("meetingd-zoom-cli-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (access_file, refresh_file) = (dir.join("access"), dir.join("refresh"));
    std::fs::write(&access_file, format!("{access}\n")).unwrap();
    std::fs::write(&refresh_file, format!("{refresh}\n")).unwrap();
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let user = z.m.provider.to_string();
    let out = meetingd(
        &[
            "integrations",
            "add",
            "--user",
            &user,
            "--platform",
            "zoom",
            "--access-token-file",
            access_file.to_str().unwrap(),
            "--refresh-token-file",
            refresh_file.to_str().unwrap(),
            "--expires-at",
            &expires,
        ],
        &[
            ("MEETINGD_DATABASE__URL", z.config.database.url.expose_secret()),
            ("MEETINGD_ENCRYPTION__KEY", z.config.encryption.key.expose_secret()),
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let b = z.book().await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("zoom")), "{state:?}");
}

async fn set_meeting_settings(c: &tokio_postgres::Client, service: Uuid, settings: serde_json::Value) {
    c.execute(
        "UPDATE services SET meeting_settings = $2::text::jsonb WHERE id = $1",
        &[&service, &settings.to_string()],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_zoom_service_with_every_option_gets_them_on_its_meeting_and_a_passcode_zoom_makes() {
    let (captured, _guard) = meetingd_testkit::logs::capture_trace();
    let z = setup().await;
    let all = serde_json::json!({"waiting_room": true, "recording": "cloud", "passcode": true, "mute_on_entry": true});
    set_meeting_settings(&z.c, z.service, all).await;
    let b = z.book().await;
    z.run().await;

    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let id = state.meeting_id.unwrap();
    let stored = z.zoom.meeting(&id).unwrap().body;
    let expected = serde_json::json!({"waiting_room": true, "join_before_host": false, "auto_recording": "cloud", "mute_upon_entry": true});
    assert_eq!(stored["settings"], expected);
    assert_eq!(stored["default_password"], true, "a passcode by the account's rules");
    let passcode = stored["password"].as_str().expect("Zoom made a passcode").to_string();
    let details = market::audit_details(&z.c, b, "meeting.create").await;
    assert!(details.iter().all(|d| !d.contains("not supported")), "Zoom honours every option: {details:?}");

    // A move re-applies the options and keeps the passcode (the link carries it).
    market::reschedule_hours(&z.c, b, 2).await;
    z.run().await;
    assert!(z.zoom.calls().contains(&format!("patch {id}")), "{:?}", z.zoom.calls());
    let moved = z.zoom.meeting(&id).unwrap().body;
    assert_eq!(moved["settings"], expected);
    assert_eq!(moved["password"], passcode.as_str());
    assert_eq!(creates(&z.zoom), 1);

    let text = captured.text();
    assert!(text.lines().count() > 5, "the capture works: {text}");
    assert!(!text.contains(&passcode), "a log line holds the passcode");
    let audit: String =
        z.c.query_one("SELECT string_agg(a::text, ' ') FROM meetingd.audit_log a", &[]).await.unwrap().get(0);
    assert!(!audit.contains(&passcode), "an audit row holds the passcode");
}

#[tokio::test]
async fn options_set_to_off_are_sent_and_unset_ones_leave_zooms_defaults() {
    let z = setup().await;
    set_meeting_settings(&z.c, z.service, serde_json::json!({"waiting_room": false, "passcode": false})).await;
    let b = z.book().await;
    z.run().await;
    let id = meeting(&z.c, b).await.meeting_id.unwrap();
    let stored = z.zoom.meeting(&id).unwrap().body;
    assert_eq!(stored["settings"], serde_json::json!({"waiting_room": false}));
    assert!(stored.get("password").is_none() && stored.get("default_password").is_none(), "passcode false sends none");

    // No options at all: no settings object, so the account's defaults hold.
    set_meeting_settings(&z.c, z.service, serde_json::json!({})).await;
    let b = z.book().await;
    z.run().await;
    let id = meeting(&z.c, b).await.meeting_id.unwrap();
    assert!(z.zoom.meeting(&id).unwrap().body.get("settings").is_none());
}

#[tokio::test]
async fn a_bad_option_value_fails_the_booking_naming_the_key() {
    let z = setup().await;
    set_meeting_settings(&z.c, z.service, serde_json::json!({"recording": "always"})).await;
    let b = z.book().await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"), "{state:?}");
    assert!(state.error.as_deref().is_some_and(|e| e.contains("\"recording\"")), "{state:?}");
    assert!(z.zoom.calls().is_empty());
}

#[tokio::test]
async fn a_google_service_with_a_waiting_room_gets_its_meeting_and_the_audit_names_the_ignored_option() {
    let g = crate::google::setup_with(3600, |_| {}).await;
    set_meeting_settings(&g.c, g.service, serde_json::json!({"waiting_room": true, "title": "Call"})).await;
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("google_meet")), "{state:?}");
    let details = market::audit_details(&g.c, b, "meeting.create").await;
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].contains("options not supported by Google Meet: waiting_room"), "{details:?}");
}

#[tokio::test]
async fn a_zoom_booking_that_falls_back_to_jitsi_names_the_options_jitsi_ignores() {
    let z = setup().await;
    z.c.execute("DELETE FROM user_meeting_integrations", &[]).await.unwrap();
    set_meeting_settings(&z.c, z.service, serde_json::json!({"passcode": true, "recording": "cloud"})).await;
    let b = z.book().await;
    z.run().await;
    let state = meeting(&z.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("jitsi")), "{state:?}");
    let details = market::audit_details(&z.c, b, "meeting.create").await;
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].contains("fallback to jitsi"), "{details:?}");
    assert!(details[0].contains("options not supported by Jitsi Meet: recording, passcode"), "{details:?}");
}

/// The provider's Zoom integration id (the account the daily count is kept for).
async fn zoom_integration(c: &tokio_postgres::Client) -> Uuid {
    c.query_one("SELECT id FROM user_meeting_integrations WHERE platform = 'zoom'", &[]).await.unwrap().get(0)
}

/// The next 00:00 UTC.
fn next_midnight() -> chrono::DateTime<chrono::Utc> {
    (chrono::Utc::now().date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap().and_utc()
}

async fn used_today(z: &Z, integration: Uuid) -> i32 {
    let sql = meetingd::db::Sql::new(&z.c, meetingd::db::Mode::DIRECT);
    meetingd::db::quota::used_today(sql, integration, "zoom").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_taking_from_one_accounts_daily_quota_never_exceed_it() {
    use meetingd::quota::QuotaStore;
    let db = TestDb::migrated().await;
    let config = db.config();
    // Two daemons' stores, each with its own pool, drawing on one account's count.
    let stores: Vec<std::sync::Arc<QuotaStore>> = (0..2)
        .map(|_| {
            let pool = meetingd::db::pool(&config.database, 10).unwrap();
            std::sync::Arc::new(QuotaStore::new(pool, Platform::Zoom, 5))
        })
        .collect();
    let account = Uuid::new_v4();
    let takes: Vec<_> = (0..20)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.take(account).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in takes {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 5, "exactly the limit is taken");
    let other = Uuid::new_v4();
    assert!(stores[1].take(other).await.unwrap(), "another account has its own count");
    let c = db.client().await;
    let used: Vec<(Uuid, i32)> = c
        .query(
            "SELECT integration_id, used FROM meetingd.platform_quota WHERE platform = 'zoom' ORDER BY used DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(used, [(account, 5), (other, 1)]);
    // 0: not counted at all.
    let uncounted = QuotaStore::new(meetingd::db::pool(&config.database, 2).unwrap(), Platform::Zoom, 0);
    assert!(uncounted.take(account).await.unwrap());
}

#[tokio::test]
async fn a_zoom_booking_whose_daily_quota_is_used_up_waits_for_midnight_without_calling_zoom() {
    let z = setup().await;
    let integration = zoom_integration(&z.c).await;
    assert_eq!(z.config.limits.zoom.daily_meeting_writes, 100);
    z.c.execute(
        "INSERT INTO meetingd.platform_quota (integration_id, platform, day, used)
         VALUES ($1, 'zoom', (now() AT TIME ZONE 'UTC')::date, 100)",
        &[&integration],
    )
    .await
    .unwrap();
    let b = z.book().await;
    z.run().await;

    assert_eq!(creates(&z.zoom), 0, "Zoom is not called: {:?}", z.zoom.calls());
    let j = job(&z.c, b).await.unwrap();
    assert_eq!(j.state, "pending", "{j:?}");
    let error = j.last_error.unwrap_or_default();
    assert!(error.contains("Zoom's daily limit"), "{error}");
    let midnight = next_midnight();
    assert!(error.contains(&format!("{} UTC", midnight.format("%Y-%m-%d %H:%M"))), "says when: {error}");
    let run_at: chrono::DateTime<chrono::Utc> =
        z.c.query_one("SELECT run_at FROM meetingd.jobs WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    let early = (midnight - run_at).num_seconds();
    assert!((-62..=5).contains(&early), "retried at 00:00 UTC, not before: {run_at} vs {midnight}");
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("pending"));
    assert_eq!(used_today(&z, integration).await, 100, "a refusal takes nothing");

    // Midnight: a new day's count.
    z.c.execute("DELETE FROM meetingd.platform_quota", &[]).await.unwrap();
    make_due(&z.c).await;
    z.run().await;
    assert_eq!(meeting(&z.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(creates(&z.zoom), 1);
    assert_eq!(used_today(&z, integration).await, 1);

    // A move is a counted update too; the GET after it is not.
    market::reschedule_hours(&z.c, b, 1).await;
    z.run().await;
    assert_eq!(used_today(&z, integration).await, 2);
}

#[tokio::test]
async fn zoom_answering_its_daily_limit_marks_the_accounts_day_used_up() {
    let z = setup().await;
    let integration = zoom_integration(&z.c).await;
    let b = z.book().await;
    z.run().await;
    assert_eq!(used_today(&z, integration).await, 1);

    // Zoom counts requests meetingd did not make (the provider's own): it knows better.
    z.zoom.fail_next([Fail::daily_limit()]);
    let b2 = z.book().await;
    z.run().await;
    assert_eq!(creates(&z.zoom), 2, "{:?}", z.zoom.calls());
    assert_eq!(used_today(&z, integration).await, 100, "the day is used up");
    let j = job(&z.c, b2).await.unwrap();
    assert_eq!(j.state, "pending", "{j:?}");
    assert!(j.last_error.is_some_and(|e| e.contains("Zoom's daily limit")));

    // Neither the retry nor a move of the first booking reaches Zoom before 00:00 UTC.
    market::reschedule_hours(&z.c, b, 1).await;
    make_due(&z.c).await;
    z.run().await;
    let calls = z.zoom.calls();
    assert_eq!(creates(&z.zoom), 2, "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("patch")), "{calls:?}");
    assert_eq!(meeting(&z.c, b2).await.link, None);
}

#[tokio::test]
async fn prune_drops_the_daily_counts_of_past_days() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let account = Uuid::new_v4();
    c.execute(
        "INSERT INTO meetingd.platform_quota (integration_id, platform, day, used)
         SELECT $1, 'zoom', (now() AT TIME ZONE 'UTC')::date - d, 3 FROM generate_series(0, 3) d",
        &[&account],
    )
    .await
    .unwrap();
    let sql = meetingd::db::Sql::new(&c, meetingd::db::Mode::DIRECT);
    let pruned = meetingd::db::maintenance::prune(sql, &db.config().retention).await.unwrap();
    assert_eq!(pruned.platform_quota, 2, "{pruned:?}");
    let left = market::count(
        &c,
        "SELECT count(*) FROM meetingd.platform_quota WHERE day >= (now() AT TIME ZONE 'UTC')::date - 1",
    )
    .await;
    assert_eq!(left, 2, "today's and yesterday's are kept");
}

#[tokio::test]
async fn a_booking_re_armed_without_a_change_costs_none_of_the_daily_writes() {
    let z = setup().await;
    z.c.execute(
        "UPDATE services SET meeting_settings = $2, description = 'Bring notes' WHERE id = $1",
        &[&z.service, &serde_json::json!({"waiting_room": true})],
    )
    .await
    .unwrap();
    let b = z.book().await;
    z.run().await;
    let integration = zoom_integration(&z.c).await;
    assert_eq!(used_today(&z, integration).await, 1);
    let link = meeting(&z.c, b).await.link;
    // Re-armed with nothing changed (a resync, a backfill): read, not written.
    z.c.execute("SELECT meetingd.touch_job($1)", &[&b]).await.unwrap();
    z.run().await;
    assert!(!z.zoom.calls().iter().any(|c| c.starts_with("patch")), "{:?}", z.zoom.calls());
    assert_eq!(used_today(&z, integration).await, 1, "no daily write spent");
    assert_eq!(meeting(&z.c, b).await.link, link);
    // The provider rewrote the agenda in Zoom: the next re-arm puts the mark back (one write).
    {
        let mut s = z.zoom.state.lock().unwrap();
        let m = s.meetings.values_mut().next().unwrap();
        m.body["agenda"] = "my own notes".into();
    }
    z.c.execute("SELECT meetingd.touch_job($1)", &[&b]).await.unwrap();
    z.run().await;
    assert_eq!(used_today(&z, integration).await, 2);
    let agenda = z.zoom.live_meetings()[0].body["agenda"].as_str().unwrap().to_string();
    assert_eq!(z.marks().read(&agenda), Some((b, 1)), "{agenda}");
    // A reschedule is a write.
    market::reschedule_hours(&z.c, b, 1).await;
    z.run().await;
    assert_eq!(used_today(&z, integration).await, 3);
}

#[tokio::test]
async fn a_daily_limit_that_outlasts_the_bookings_start_falls_back_and_one_that_does_not_waits() {
    let z = setup().await;
    // Zoom says: no more today, for two hours.
    let daily = || Fail { retry_after: Some("7200".into()), ..Fail::daily_limit() };
    z.zoom.fail_next([daily()]);
    let soon = z.book().await;
    z.c.execute(
        "UPDATE bookings SET start_time = now() + interval '1 hour', end_time = now() + interval '2 hours' WHERE id = $1",
        &[&soon],
    )
    .await
    .unwrap();
    z.run().await;
    let state = meeting(&z.c, soon).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("jitsi")), "{state:?}");
    // A booking tomorrow waits for Zoom instead.
    z.zoom.fail_next([daily()]);
    let later = z.book().await;
    z.run().await;
    let j = job(&z.c, later).await.unwrap();
    assert_eq!((j.state.as_str(), j.due_later), ("pending", true), "{j:?}");
    assert_eq!(meeting(&z.c, later).await.platform, None);
}
