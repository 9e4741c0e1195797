//! Reconcile logic, driven step by step with `Worker::run_once` and a scripted platform.

use std::sync::Arc;
use std::time::Duration;

use meetingd::config::{Config, Fallback};
use meetingd::job::{AuditEntry, Event, WriteBack};
use meetingd::providers::{Platform, Providers};
use meetingd::worker::{Processed, Worker};
use meetingd_testkit::db::TestDb;
use meetingd_testkit::market::{self, audit, events, job, make_due, meeting};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::helpers::scripted::{Failure, Scripted};

struct Setup {
    db: TestDb,
    c: tokio_postgres::Client,
    m: market::Market,
    platform: Arc<Scripted>,
    worker: Worker,
}

async fn setup_with(adjust: impl FnOnce(&mut Config)) -> Setup {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let platform = Scripted::new(Platform::Jitsi);
    let mut config = db.config();
    adjust(&mut config);
    let worker = worker_for(&config, Providers::default().with(platform.clone()));
    Setup { db, c, m, platform, worker }
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

fn worker_for(config: &Config, providers: Providers) -> Worker {
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    Worker::new(
        pool,
        providers,
        config.worker.clone(),
        config.fallback.platform,
        Arc::new(Notify::new()),
        Uuid::new_v4(),
    )
}

#[tokio::test]
async fn confirm_links_reschedule_moves_cancel_deletes() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "pending").await;
    market::set_status(&s.c, b, "confirmed").await;
    assert_eq!(s.worker.run_once().await.unwrap(), 1);

    let linked = meeting(&s.c, b).await;
    assert_eq!(linked.status.as_deref(), Some("ready"));
    assert_eq!(linked.platform.as_deref(), Some("jitsi"));
    let link = linked.link.clone().unwrap();
    assert_eq!(s.platform.creates(), [(b, 1)]);
    assert_eq!(job(&s.c, b).await.unwrap().state, "done");
    assert_eq!(events(&s.c, b).await[0].0, "meeting_ready");
    assert_eq!(s.worker.run_once().await.unwrap(), 0, "nothing left to do");

    market::reschedule_hours(&s.c, b, 3).await;
    s.worker.run_once().await.unwrap();
    assert_eq!(s.platform.updates(), 1);
    assert_eq!(meeting(&s.c, b).await.link.as_deref(), Some(link.as_str()), "same link after reschedule");
    let times_match = market::count(
        &s.c,
        &format!(
            "SELECT count(*) FROM bookings b JOIN meetingd.meetings m ON m.booking_id = b.id
              WHERE b.id = '{b}' AND m.start_time = b.start_time AND m.end_time = b.end_time AND m.state = 'live'"
        ),
    )
    .await;
    assert_eq!(times_match, 1);

    market::set_status(&s.c, b, "cancelled").await;
    s.worker.run_once().await.unwrap();
    let gone = meeting(&s.c, b).await;
    assert_eq!((gone.status.as_deref(), gone.link, gone.meeting_id), (Some("deleted"), None, None));
    assert!(s.platform.live_per_booking().is_empty());
    assert_eq!(s.platform.deletes(), 1);
    assert_eq!(
        audit(&s.c, b).await,
        [
            ("meeting.create".into(), "ok".into()),
            ("meeting.update".into(), "ok".into()),
            ("meeting.delete".into(), "ok".into())
        ]
    );

    // Re-confirming after a cancel makes a new meeting with a new generation.
    market::set_status(&s.c, b, "confirmed").await;
    s.worker.run_once().await.unwrap();
    assert_eq!(s.platform.creates(), [(b, 1), (b, 2)]);
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
    assert_ne!(meeting(&s.c, b).await.link.unwrap(), link);
}

#[tokio::test]
async fn confirm_then_cancel_before_the_worker_runs_makes_no_meeting() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "pending").await;
    market::set_status(&s.c, b, "confirmed").await;
    market::set_status(&s.c, b, "cancelled").await;
    s.worker.run_once().await.unwrap();
    assert!(s.platform.creates().is_empty());
    assert_eq!(
        meeting(&s.c, b).await,
        market::MeetingState { status: None, link: None, meeting_id: None, platform: None, error: None }
    );
    assert_eq!(job(&s.c, b).await.unwrap().state, "done");
}

#[tokio::test]
async fn cancel_while_the_platform_creates_ends_with_no_meeting() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "pending").await;
    market::set_status(&s.c, b, "confirmed").await;
    let gate = s.platform.gate();
    let worker = &s.worker;
    let run = worker.run_once();
    let cancel = async {
        gate.entered.notified().await;
        // The app cancels while the platform call is in flight (no transaction is open on our side).
        market::set_status(&s.c, b, "cancelled").await;
        gate.release.notify_one();
    };
    let (processed, ()) = tokio::join!(run, cancel);
    assert_eq!(processed.unwrap(), 1);
    // The meeting that was created is recorded, but the booking is not shown a link.
    assert_eq!(meeting(&s.c, b).await.link, None);
    assert_eq!(job(&s.c, b).await.unwrap().state, "pending", "stale result: the job runs again");
    s.worker.run_once().await.unwrap();
    assert!(s.platform.live_per_booking().is_empty(), "the raced meeting was deleted");
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("deleted"));
    assert_eq!(job(&s.c, b).await.unwrap().state, "done");
}

#[tokio::test]
async fn transient_errors_retry_with_backoff_then_succeed() {
    // Back-off long enough that "not due yet" cannot race the clock.
    let s = setup_with(|c| {
        c.worker.retry_base_ms = 10_000;
        c.worker.retry_max_ms = 20_000;
    })
    .await;
    s.platform.fail_next([Failure::Transient, Failure::RateLimited(Some(Duration::from_secs(30)))]);
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;

    s.worker.run_once().await.unwrap();
    let j = job(&s.c, b).await.unwrap();
    assert_eq!((j.state.as_str(), j.attempts, j.due_later), ("pending", 1, true));
    assert!(j.last_error.unwrap().contains("503"));
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("pending"));
    assert_eq!(s.worker.run_once().await.unwrap(), 0, "not due before its back-off");

    make_due(&s.c).await;
    s.worker.run_once().await.unwrap();
    let j = job(&s.c, b).await.unwrap();
    assert_eq!((j.attempts, j.due_later), (2, true));
    // Retry-After (30 s) is a floor, capped by worker.retry_max_ms (20 s here).
    let wait_ms: f64 =
        s.c.query_one(
            "SELECT EXTRACT(EPOCH FROM run_at - updated_at)::float8 * 1000 FROM meetingd.jobs WHERE booking_id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert!((19_900.0..=20_100.0).contains(&wait_ms), "Retry-After capped at retry_max_ms: {wait_ms}");

    make_due(&s.c).await;
    s.worker.run_once().await.unwrap();
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(s.platform.creates().len(), 1);
    let outcomes: Vec<String> = audit(&s.c, b).await.into_iter().map(|(_, o)| o).collect();
    assert_eq!(outcomes, ["retry", "retry", "ok"]);
}

#[tokio::test]
async fn out_of_attempts_marks_the_booking_failed_and_tells_the_provider() {
    let s = setup_with(|c| c.worker.max_attempts = 3).await;
    s.platform.fail_always(Failure::Transient);
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    for _ in 0..3 {
        make_due(&s.c).await;
        assert_eq!(s.worker.run_once().await.unwrap(), 1);
    }
    make_due(&s.c).await;
    assert_eq!(s.worker.run_once().await.unwrap(), 0, "a failed job is not claimed again");
    let state = meeting(&s.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"));
    let error = state.error.unwrap();
    assert!(error.contains("after 3 attempts") && error.contains("503"), "{error}");
    assert_eq!(job(&s.c, b).await.unwrap().state, "failed");
    let ev = events(&s.c, b).await;
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].0.as_str(), ev[0].1.as_str()), ("meeting_failed", error.as_str()));
    let user: Uuid = s.c.query_one("SELECT user_id FROM meetingd.events", &[]).await.unwrap().get(0);
    assert_eq!(user, s.m.provider, "the event is addressed to the provider");

    // A later change of the booking gives it a fresh set of attempts.
    s.platform.heal();
    market::reschedule_hours(&s.c, b, 1).await;
    s.worker.run_once().await.unwrap();
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
}

#[tokio::test]
async fn permanent_errors_fail_at_once() {
    let s = setup().await;
    s.platform.fail_next([Failure::Permanent("the calendar does not exist")]);
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    s.worker.run_once().await.unwrap();
    let state = meeting(&s.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"));
    assert!(state.error.unwrap().contains("the calendar does not exist"));
    assert_eq!(job(&s.c, b).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn a_panicking_provider_fails_only_that_attempt() {
    let s = setup().await;
    s.platform.fail_next([Failure::Panic]);
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let b2 = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    assert_eq!(s.worker.run_once().await.unwrap(), 2);
    let panicked = [job(&s.c, b).await.unwrap(), job(&s.c, b2).await.unwrap()];
    let failed_one = panicked.iter().find(|j| j.state == "pending").expect("one job retried");
    assert!(failed_one.last_error.as_deref().unwrap().contains("internal error"), "{failed_one:?}");
    make_due(&s.c).await;
    s.worker.run_once().await.unwrap();
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(meeting(&s.c, b2).await.status.as_deref(), Some("ready"));
}

#[tokio::test]
async fn unconnected_platform_falls_back_to_jitsi_and_says_so() {
    let s = setup().await;
    let google = market::service(&s.c, s.m.provider, true, Some("google_meet")).await;
    let b = market::book(&s.c, google, s.m.customer, "confirmed").await;
    s.worker.run_once().await.unwrap();
    let state = meeting(&s.c, b).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("jitsi")));
    let (kind, message) = events(&s.c, b).await.remove(0);
    assert_eq!(kind, "meeting_ready");
    assert!(message.contains("google_meet is not connected"), "{message}");
    let detail: String =
        s.c.query_one("SELECT detail FROM meetingd.audit_log WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert!(detail.contains("fallback to jitsi"), "{detail}");
}

#[tokio::test]
async fn without_fallback_an_unconnected_platform_fails_with_an_actionable_error() {
    let s = setup_with(|c| c.fallback.platform = Fallback::None).await;
    let zoom = market::service(&s.c, s.m.provider, true, Some("zoom")).await;
    let b = market::book(&s.c, zoom, s.m.customer, "confirmed").await;
    s.worker.run_once().await.unwrap();
    let state = meeting(&s.c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"));
    assert!(state.error.as_deref().unwrap().contains("has not connected Zoom"), "{state:?}");
    assert_eq!(events(&s.c, b).await[0].0, "meeting_failed");
    assert!(s.platform.creates().is_empty());
}

#[tokio::test]
async fn impossible_bookings_and_unknown_platforms_fail_clearly() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "pending").await;
    s.c.execute(
        "UPDATE bookings SET end_time = start_time - interval '1 hour', status = 'confirmed' WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    let skype = market::service(&s.c, s.m.provider, true, Some("skype")).await;
    let b2 = market::book(&s.c, skype, s.m.customer, "confirmed").await;
    s.worker.run_once().await.unwrap();
    let e1 = meeting(&s.c, b).await.error.unwrap();
    assert!(e1.contains("ends") && e1.contains("before it starts"), "{e1}");
    let e2 = meeting(&s.c, b2).await.error.unwrap();
    assert!(e2.contains("\"skype\""), "{e2}");
    assert!(s.platform.creates().is_empty());
}

#[tokio::test]
async fn manual_links_are_left_alone() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "pending").await;
    s.c.execute(
        "UPDATE bookings SET meeting_status = 'manual', meeting_link = 'https://example.com/room', status = 'confirmed' WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    s.worker.run_once().await.unwrap();
    market::set_status(&s.c, b, "cancelled").await;
    s.worker.run_once().await.unwrap();
    assert!(s.platform.creates().is_empty());
    let state = meeting(&s.c, b).await;
    assert_eq!((state.status.as_deref(), state.link.as_deref()), (Some("manual"), Some("https://example.com/room")));
}

#[tokio::test]
async fn deleted_booking_and_move_to_in_person_remove_the_meeting() {
    let s = setup().await;
    let b1 = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let b2 = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    s.worker.run_once().await.unwrap();
    assert_eq!(s.platform.live_per_booking().len(), 2);
    s.c.execute("DELETE FROM bookings WHERE id = $1", &[&b1]).await.unwrap();
    s.c.execute("UPDATE bookings SET service_id = $2 WHERE id = $1", &[&b2, &s.m.in_person]).await.unwrap();
    s.worker.run_once().await.unwrap();
    assert!(s.platform.live_per_booking().is_empty());
    assert_eq!(meeting(&s.c, b2).await.status.as_deref(), Some("deleted"));
}

#[tokio::test]
async fn only_the_lease_holder_records_an_outcome() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let (_client, mut first) = claim_as_another_daemon(&s).await;
    assert_eq!(first.len(), 1);
    let snapshot = first.remove(0);
    // The lease runs out during the platform call, and another daemon claims the job and links it.
    let gate = s.platform.gate();
    let late = s.worker.process(snapshot);
    let takeover = async {
        gate.entered.notified().await;
        s.platform.ungate();
        s.c.execute("UPDATE meetingd.jobs SET lease_until = now() - interval '1 second'", &[]).await.unwrap();
        assert_eq!(s.worker.run_once().await.unwrap(), 1);
        gate.release.notify_one();
    };
    let (late, ()) = tokio::join!(late, takeover);
    // The first holder finishes late: its result is refused.
    assert_eq!(late, Processed::Recorded(WriteBack::LeaseLost));
    assert_eq!(s.platform.creates().len(), 2, "both holders called the platform");
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
    let recorded = market::count(&s.c, "SELECT count(*) FROM meetingd.audit_log WHERE outcome = 'ok'").await;
    assert_eq!(recorded, 1, "only the lease holder's write-back committed");
}

#[tokio::test]
async fn a_holder_whose_lease_was_taken_over_does_not_call_the_platform() {
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let snapshot = claim_as_another_daemon(&s).await.1.remove(0);
    // The lease runs out before the first holder gets to the platform; another daemon links it.
    s.c.execute("UPDATE meetingd.jobs SET lease_until = now() - interval '1 second'", &[]).await.unwrap();
    assert_eq!(s.worker.run_once().await.unwrap(), 1);
    assert_eq!(s.worker.process(snapshot).await, Processed::Recorded(WriteBack::LeaseLost));
    assert_eq!(s.platform.creates().len(), 1, "the first holder found its claim gone before calling");
    assert_eq!(s.platform.live_per_booking().get(&b), Some(&1));
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
}

/// Claims up to 10 due jobs, as another daemon would, on a connection of its own (returned, for
/// statements that must run as that daemon).
async fn claim_as_another_daemon(s: &Setup) -> (meetingd::db::Conn, Vec<meetingd::job::Snapshot>) {
    let pool = meetingd::db::pool(&s.db.config().database, 2).unwrap();
    let client = pool.get().await.unwrap();
    let claimed = claim_ten(&client).await;
    (client, claimed)
}

/// Up to 10 due jobs, claimed on `client` for a daemon of its own, with no rate limit and no
/// platform prepared for (so the claim commits asynchronously).
async fn claim_ten(client: &meetingd::db::Conn) -> Vec<meetingd::job::Snapshot> {
    let (lease, limits, calls) = (Duration::from_secs(60), Default::default(), Default::default());
    meetingd::db::jobs::claim(client, Uuid::new_v4(), 10, lease, &limits, &calls).await.unwrap().snapshots
}

/// Claims `b`'s job; the claim (committed asynchronously) is lost in a server crash, which
/// restarts with the job row as it was before; the job is claimed again. A connection, the lost
/// claim and the new one.
async fn claim_lost_with_the_server_then_claimed_again(
    s: &Setup,
    b: Uuid,
) -> (meetingd::db::Conn, meetingd::job::Snapshot, meetingd::job::Snapshot) {
    let (client, mut lost) = claim_as_another_daemon(s).await;
    let lost = lost.remove(0);
    s.c.execute(
        "UPDATE meetingd.jobs SET claim_seq = claim_seq - 1, attempts = attempts - 1, lease_owner = NULL,
                lease_until = NULL, lease_token = NULL WHERE booking_id = $1",
        &[&b],
    )
    .await
    .unwrap();
    let next = claim_ten(&client).await.remove(0);
    (client, lost, next)
}

#[tokio::test]
async fn a_claim_lost_with_the_server_cannot_pass_for_the_next_claim_of_its_number() {
    use meetingd::db::jobs;
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let (client, lost, next) = claim_lost_with_the_server_then_claimed_again(&s, b).await;
    assert_eq!(next.claim.claim_seq, lost.claim.claim_seq, "the same claim number is handed out again");
    assert_ne!(next.claim.token, lost.claim.token);

    // The lost claim's holder can record neither a create intent nor an outcome.
    let intent = meetingd::job::Intent { platform: "google_meet".into(), generation: 1, owner: None, account: None };
    let hold = jobs::Hold { claim: lost.claim.clone(), intent: Some(intent), integration: None };
    let held = jobs::hold_claims(&client, &[hold], jobs::RowLocks::Wait).await.unwrap();
    assert_eq!(held.iter().map(|h| h.held).collect::<Vec<_>>(), [Some(false)]);
    assert_eq!(s.worker.process(lost).await, Processed::Recorded(WriteBack::LeaseLost));
    assert_eq!(s.worker.process(next).await, Processed::Recorded(WriteBack::Done));
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
    let recorded = market::count(&s.c, "SELECT count(*) FROM meetingd.audit_log WHERE outcome = 'ok'").await;
    assert_eq!(recorded, 1, "only the current claim's write-back committed");
}

#[tokio::test]
async fn a_lost_claim_and_its_successor_in_one_batch_write_only_the_successor() {
    use meetingd::db::jobs::{self, RowLocks};
    use meetingd::job::{Finished, Outcome};
    use meetingd::providers::Meeting;
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let (client, lost, current) = claim_lost_with_the_server_then_claimed_again(&s, b).await;
    let finished = |snap: &meetingd::job::Snapshot, room: &str| {
        let booking = snap.booking.as_ref().unwrap();
        Finished {
            snapshot: snap.clone(),
            outcome: Outcome::Linked {
                platform: "jitsi".into(),
                requested_platform: Some("jitsi".into()),
                meeting: Meeting {
                    external_id: room.into(),
                    join_url: format!("https://meet.example/{room}"),
                    account: None,
                },
                start: booking.start.unwrap(),
                end: booking.end.unwrap(),
                generation: 1,
                settings: serde_json::json!({}),
                owner: booking.provider_id,
            },
            audit: vec![AuditEntry {
                action: "meeting.create",
                platform: Some("jitsi".into()),
                outcome: "ok",
                duration_ms: Some(1),
                detail: Some(room.into()),
            }],
            event: Some(Event { kind: "meeting_ready", platform: None, message: room.into() }),
            resolved: None,
            removed: false,
        }
    };
    let batch = [finished(&lost, "ghost"), finished(&current, "real")];
    let results = jobs::write_back(&client, "test", &batch, RowLocks::Skip).await.unwrap();
    assert_eq!(results, vec![Some(WriteBack::LeaseLost), Some(WriteBack::Done)]);
    assert_eq!(meeting(&s.c, b).await.link.as_deref(), Some("https://meet.example/real"));
    let recorded = market::count(
        &s.c,
        &format!("SELECT count(*) FROM meetingd.meetings WHERE booking_id = '{b}' AND external_id = 'real'"),
    )
    .await;
    assert_eq!(recorded, 1);
    assert_eq!(audit(&s.c, b).await.len(), 1, "only the current claim's audit line");
    assert_eq!(events(&s.c, b).await, vec![("meeting_ready".to_string(), "real".to_string())]);
}

/// A job's claim number, attempts and lease token.
async fn lease_of(c: &tokio_postgres::Client, booking: Uuid) -> (i64, i32, Option<Uuid>) {
    let r = c
        .query_one("SELECT claim_seq, attempts, lease_token FROM meetingd.jobs WHERE booking_id = $1", &[&booking])
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// A savepoint can be made only inside a transaction block.
async fn in_transaction(c: &tokio_postgres::Client) -> bool {
    c.batch_execute("SAVEPOINT probe").await.is_ok()
}

#[tokio::test]
async fn a_claim_leaves_its_connection_as_it_found_it_even_when_it_fails() {
    use meetingd::db::jobs;
    let s = setup().await;
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let pool = meetingd::db::pool(&s.db.config().database, 1).unwrap();
    let settings = "SELECT current_setting('synchronous_commit') || ' ' || current_setting('plan_cache_mode')
                           || ' ' || current_setting('enable_seqscan')";
    let client = pool.get().await.unwrap();
    let defaults: String = client.query_one(settings, &[]).await.unwrap().get(0);
    let claimed =
        jobs::claim(&client, Uuid::new_v4(), 10, Duration::from_secs(60), &Default::default(), &Default::default())
            .await
            .unwrap();
    assert_eq!(claimed.snapshots.len(), 1);
    assert!(!in_transaction(&client).await);
    assert_eq!(client.query_one(settings, &[]).await.unwrap().get::<_, String>(0), defaults);
    drop(client);

    // A claim that fails inside its transaction (here: a constraint the claim's update breaks).
    s.c.execute("UPDATE meetingd.jobs SET lease_until = NULL WHERE booking_id = $1", &[&b]).await.unwrap();
    s.c.batch_execute("ALTER TABLE meetingd.jobs ADD CONSTRAINT no_second_claim CHECK (claim_seq < 2) NOT VALID")
        .await
        .unwrap();
    let before = lease_of(&s.c, b).await;
    let client = pool.get().await.unwrap();
    let failed =
        jobs::claim(&client, Uuid::new_v4(), 10, Duration::from_secs(60), &Default::default(), &Default::default())
            .await;
    assert!(failed.unwrap_err().to_string().contains("no_second_claim"));
    assert!(!in_transaction(&client).await, "the connection goes back to the pool outside any transaction");
    assert_eq!(client.query_one(settings, &[]).await.unwrap().get::<_, String>(0), defaults);
    assert_eq!(lease_of(&s.c, b).await, before, "the failed claim changed nothing");
}

#[tokio::test]
async fn rate_limits_defer_without_spending_attempts_and_spare_other_providers() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let busy = market::user(&c, "provider").await;
    let quiet = market::user(&c, "provider").await;
    let customer = market::user(&c, "customer").await;
    for p in [busy, quiet] {
        c.execute(
            "INSERT INTO user_meeting_integrations (user_id, platform, access_token, is_active) VALUES ($1, 'google_meet', 'x', true)",
            &[&p],
        )
        .await
        .unwrap();
    }
    let busy_service = market::service(&c, busy, true, Some("google_meet")).await;
    let quiet_service = market::service(&c, quiet, true, Some("google_meet")).await;
    let busy_bookings = market::book_many(&c, busy_service, customer, 5).await;
    let quiet_booking = market::book(&c, quiet_service, customer, "pending").await;
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();

    let platform = Scripted::new(Platform::GoogleMeet);
    let mut config = db.config();
    config.worker.concurrency = 8;
    config.limits.google_meet.integration_rate = 0.5;
    config.limits.google_meet.integration_burst = 2;
    let worker = worker_for(&config, Providers::default().with(platform.clone())).with_limits(config.limits.clone());
    // The claim pays for each call: two of the busy provider's jobs and the quiet one's; the
    // other three are left unclaimed until their turn.
    assert_eq!(worker.run_once().await.unwrap(), 3);

    let per_booking = platform.live_per_booking();
    assert_eq!(per_booking.len(), 3, "two of the busy provider's bookings and the quiet one's");
    assert_eq!(per_booking.get(&quiet_booking), Some(&1), "the quiet provider is not held back");
    let mut deferred = 0;
    for b in &busy_bookings {
        let j = job(&c, *b).await.unwrap();
        if j.state == "pending" {
            deferred += 1;
            assert!(j.due_later, "deferred until a token is due");
            assert_eq!(j.attempts, 0, "a deferral spends no attempt");
            assert!(audit(&c, *b).await.is_empty(), "nothing was attempted");
        }
    }
    assert_eq!(deferred, 3);
}

#[tokio::test]
async fn batch_write_back_fences_each_job_and_leaves_app_locked_bookings_to_their_own_write_back() {
    use meetingd::db::jobs;
    use meetingd::job::{Finished, Outcome};
    use meetingd::providers::Meeting;

    let s = setup().await;
    let ids = market::book_many(&s.c, s.m.online, s.m.customer, 5).await;
    s.c.execute("UPDATE bookings SET status = 'confirmed' WHERE id = ANY($1)", &[&ids]).await.unwrap();
    let (client, mut snapshots) = claim_as_another_daemon(&s).await;
    assert_eq!(snapshots.len(), 5);
    snapshots.sort_by_key(|s| ids.iter().position(|id| *id == s.claim.booking_id));
    let [done, stale, lost, locked, failed] = [0, 1, 2, 3, 4].map(|i| ids[i]);

    // The booking behind `stale` changes meanwhile; `lost`'s lease is taken by another claim.
    market::reschedule_hours(&s.c, stale, 1).await;
    s.c.execute("UPDATE meetingd.jobs SET claim_seq = claim_seq + 1 WHERE booking_id = $1", &[&lost]).await.unwrap();
    // The app holds `locked`'s booking row in an open transaction.
    let mut app = s.db.client().await;
    let app_tx = app.transaction().await.unwrap();
    app_tx.execute("SELECT 1 FROM bookings WHERE id = $1 FOR UPDATE", &[&locked]).await.unwrap();

    let linked = |b: &Uuid, snap: &meetingd::job::Snapshot| {
        let booking = snap.booking.as_ref().unwrap();
        Outcome::Linked {
            platform: "jitsi".into(),
            requested_platform: Some("jitsi".into()),
            meeting: Meeting {
                external_id: format!("room-{b}"),
                join_url: format!("https://meet.example/{b}"),
                account: None,
            },
            start: booking.start.unwrap(),
            end: booking.end.unwrap(),
            generation: 1,
            settings: serde_json::json!({}),
            owner: booking.provider_id,
        }
    };
    let batch: Vec<Finished> = snapshots
        .iter()
        .map(|snap| {
            let b = snap.claim.booking_id;
            let outcome = if b == failed {
                Outcome::Failed { error: "The provider must fix this.".into() }
            } else {
                linked(&b, snap)
            };
            let audit = vec![AuditEntry {
                action: "meeting.create",
                platform: Some("jitsi".into()),
                outcome: "ok",
                duration_ms: Some(1),
                detail: None,
            }];
            let event = Some(Event { kind: "meeting_ready", platform: None, message: "ready".into() });
            Finished { snapshot: snap.clone(), outcome, audit, event, resolved: None, removed: false }
        })
        .collect();
    let written = jobs::write_back(&client, "test", &batch, jobs::RowLocks::Skip);
    let results = tokio::time::timeout(Duration::from_secs(5), written)
        .await
        .expect("the batch never waits for the app's lock")
        .unwrap();
    assert_eq!(
        results,
        vec![Some(WriteBack::Done), Some(WriteBack::Stale), Some(WriteBack::LeaseLost), None, Some(WriteBack::Done)]
    );
    app_tx.commit().await.unwrap();

    assert_eq!(meeting(&s.c, done).await.status.as_deref(), Some("ready"));
    assert_eq!(job(&s.c, done).await.unwrap().state, "done");
    // Stale: the meeting is recorded (it exists), the booking does not show it, the job runs again.
    assert_eq!(meeting(&s.c, stale).await.link, None);
    assert_eq!(job(&s.c, stale).await.unwrap().state, "pending");
    let recorded = market::count(
        &s.c,
        &format!("SELECT count(*) FROM meetingd.meetings WHERE booking_id IN ('{stale}', '{done}') AND state = 'live'"),
    )
    .await;
    assert_eq!(recorded, 2);
    // Lease lost: nothing written.
    assert_eq!(meeting(&s.c, lost).await.link, None);
    let held = market::count(
        &s.c,
        &format!("SELECT count(*) FROM meetingd.jobs WHERE booking_id = '{lost}' AND lease_owner IS NOT NULL"),
    )
    .await;
    assert_eq!(held, 1, "the other claim still holds it");
    // Locked: not written by the batch; its own write-back records it once the app commits.
    assert_eq!(meeting(&s.c, locked).await.link, None);
    let alone = batch.iter().find(|f| f.snapshot.claim.booking_id == locked).unwrap();
    let written = jobs::write_back(&client, "test", std::slice::from_ref(alone), jobs::RowLocks::Wait).await;
    assert_eq!(written.unwrap(), vec![Some(WriteBack::Done)]);
    assert_eq!(meeting(&s.c, locked).await.status.as_deref(), Some("ready"));
    let f = meeting(&s.c, failed).await;
    assert_eq!((f.status.as_deref(), f.error.as_deref()), (Some("failed"), Some("The provider must fix this.")));
    assert_eq!(job(&s.c, failed).await.unwrap().state, "failed");
    // The audit trail has every fenced job's platform calls, stale ones included; the app is told
    // only of current results.
    for (b, audited, told) in [(done, 1, 1), (stale, 1, 0), (lost, 0, 0), (locked, 1, 1), (failed, 1, 1)] {
        assert_eq!(audit(&s.c, b).await.len(), audited, "audit rows of {b}");
        assert_eq!(events(&s.c, b).await.len(), told, "events of {b}");
    }
}

#[tokio::test]
async fn a_write_back_the_app_keeps_refusing_counts_against_max_attempts() {
    let s = setup_with(|c| c.worker.max_attempts = 3).await;
    // The app's own trigger refuses any meeting link on its bookings.
    s.c.batch_execute(
        "CREATE FUNCTION app_refuses_links() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.meeting_link IS NOT NULL THEN RAISE EXCEPTION 'links are set by the app only'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER app_refuses_links BEFORE UPDATE ON bookings FOR EACH ROW EXECUTE FUNCTION app_refuses_links();",
    )
    .await
    .unwrap();
    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    for round in 1..=6 {
        s.c.execute(
            "UPDATE meetingd.jobs SET lease_until = now() - interval '1 second' WHERE lease_until IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
        make_due(&s.c).await;
        s.worker.run_once().await.unwrap();
        let j = job(&s.c, b).await.unwrap();
        if round <= 3 {
            assert_eq!(j.state, "pending", "round {round}: {j:?}");
            assert!(j.last_error.as_deref().unwrap().contains("links are set by the app only"), "{j:?}");
        }
    }
    let j = job(&s.c, b).await.unwrap();
    assert_eq!(j.state, "failed", "{j:?}");
    let error = j.last_error.unwrap();
    assert!(error.contains("after 3 attempts") && error.contains("links are set by the app only"), "{error}");
    assert_eq!(s.platform.creates().len(), 3, "the platform is not called again once the job gave up");
    let told = events(&s.c, b).await;
    assert!(told.iter().any(|(kind, m)| kind == "meeting_failed" && m.contains("refuses the update")), "{told:?}");
}

#[tokio::test]
async fn connections_to_a_read_only_server_are_dropped_and_made_again() {
    let s = setup().await;
    let mut config = s.db.config();
    // Connect wherever the URL leads (the default insists on a writable server at connect time).
    config.database.url = secrecy::SecretString::from(format!("{}?target_session_attrs=any", s.db.url));
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    let worker = Worker::new(
        pool.clone(),
        Providers::default().with(s.platform.clone()),
        config.worker.clone(),
        config.fallback.platform,
        Arc::new(Notify::new()),
        Uuid::new_v4(),
    );
    // The pool's connections lead to a server that is read-only (a standby after a failover);
    // then the writable server answers under the same address.
    s.c.batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", s.db.name)).await.unwrap();
    let held = [pool.get().await.unwrap(), pool.get().await.unwrap()];
    drop(held);
    s.c.batch_execute(&format!("ALTER DATABASE {} RESET default_transaction_read_only", s.db.name)).await.unwrap();

    let b = market::book(&s.c, s.m.online, s.m.customer, "confirmed").await;
    let refused = worker.run_once().await.unwrap_err();
    assert!(refused.is_read_only(), "{refused}");
    assert_eq!(worker.run_once().await.unwrap(), 1, "the next claim runs on a new, writable connection");
    assert_eq!(meeting(&s.c, b).await.status.as_deref(), Some("ready"));
}

#[tokio::test]
async fn holds_batched_together_skip_a_job_row_locked_elsewhere_and_read_the_integration_along() {
    use meetingd::db::jobs::{self, Hold, RowLocks};
    use meetingd::job::Intent;
    let s = setup().await;
    let google = market::service(&s.c, s.m.provider, true, Some("google_meet")).await;
    market::store_connection(
        &s.db.config(),
        market::google_connection(s.m.provider, "access", "refresh", 3600, "provider@example.com"),
    )
    .await;
    let bookings = [
        market::book(&s.c, google, s.m.customer, "confirmed").await,
        market::book(&s.c, google, s.m.customer, "confirmed").await,
        market::book(&s.c, google, s.m.customer, "confirmed").await,
    ];
    let (client, mut claimed) = claim_as_another_daemon(&s).await;
    claimed.sort_by_key(|c| bookings.iter().position(|b| *b == c.claim.booking_id));
    assert_eq!(claimed.len(), 3);
    // The third claim is no longer the job's: its token changed.
    s.c.execute("UPDATE meetingd.jobs SET lease_token = gen_random_uuid() WHERE booking_id = $1", &[&bookings[2]])
        .await
        .unwrap();
    // The app holds the first job's row (a booking change in a transaction still open).
    let mut app = s.db.client().await;
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM meetingd.jobs WHERE booking_id = $1 FOR UPDATE", &[&bookings[0]]).await.unwrap();

    let holds: Vec<Hold> = claimed
        .iter()
        .map(|c| Hold {
            claim: c.claim.clone(),
            intent: Some(Intent {
                platform: "google_meet".into(),
                generation: 1,
                owner: Some(s.m.provider),
                account: None,
            }),
            integration: Some((s.m.provider, "google_meet".into())),
        })
        .collect();
    let held = jobs::hold_claims(&client, &holds, RowLocks::Skip).await.unwrap();
    assert_eq!(
        held.iter().map(|h| h.held).collect::<Vec<_>>(),
        [None, Some(true), Some(false)],
        "locked: left out; lost: refused"
    );
    let row = held[1].integration.as_ref().expect("the provider's Google row is read along");
    assert_eq!((row.user_id, row.platform.as_str(), row.is_active), (s.m.provider, "google_meet", true));
    let intents = |b: Uuid| {
        let c = &s.c;
        async move {
            c.query_one("SELECT intent_platform FROM meetingd.jobs WHERE booking_id = $1", &[&b])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };
    assert_eq!(intents(bookings[1]).await.as_deref(), Some("google_meet"), "the held claim's intent is recorded");
    assert_eq!(intents(bookings[2]).await, None, "the lost claim records nothing");
    tx.rollback().await.unwrap();
    assert_eq!(intents(bookings[0]).await, None, "the skipped one was not written");

    // On its own, the skipped hold waits for the row and is written.
    let alone = jobs::hold_claims(&client, &holds[..1], RowLocks::Wait).await.unwrap();
    assert_eq!(alone[0].held, Some(true));
    assert_eq!(intents(bookings[0]).await.as_deref(), Some("google_meet"));
}
