//! meetingd behind PgBouncer in transaction pooling mode (`database.pooler =
//! "pgbouncer-transaction"`, `worker.listen = false`): statements of different clients share two
//! server connections, so nothing may rely on a named prepared statement or on session state.

use std::time::Duration;

use meetingd::config::{Config, Pooler};
use meetingd::providers::Providers;
use meetingd_testkit::daemon::InProcess as Daemon;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::market::{self, count, meeting};
use meetingd_testkit::pgbouncer::PgBouncer;
use secrecy::SecretString;
use uuid::Uuid;

use crate::cli::{meetingd, text};

const WAIT: Duration = Duration::from_secs(60);

/// How long a daemon behind PgBouncer may take to stop once told to.
const STOP: Duration = Duration::from_secs(20);

/// The daemon in-process with the providers its configuration describes.
fn start_daemon(config: Config) -> Daemon {
    let providers = Providers::from_config(&config);
    Daemon::start(config, providers)
}

/// The daemon's configuration for `db` reached through `bouncer`.
fn pooled_config(db: &TestDb, bouncer: &PgBouncer) -> Config {
    let mut c = db.config();
    c.database.url = SecretString::from(bouncer.url_for(&db.url));
    c.database.migration_url = SecretString::from(db.url.clone());
    c.database.pooler = Pooler::PgbouncerTransaction;
    c.worker.listen = false;
    c.worker.concurrency = 8;
    c
}

async fn wait_ready(c: &tokio_postgres::Client, ids: &[Uuid]) {
    eventually(&format!("{} bookings linked", ids.len()), WAIT, || async {
        let ready: i64 = c
            .query_one("SELECT count(*) FROM bookings WHERE id = ANY($1) AND meeting_status = 'ready'", &[&ids])
            .await
            .unwrap()
            .get(0);
        (ready == ids.len() as i64).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_burst_reschedule_and_cancel_through_pgbouncer() {
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(2);
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ids = market::book_many(&c, m.online, m.customer, 200).await;
    let daemon = start_daemon(pooled_config(&db, &bouncer));
    c.execute("UPDATE bookings SET status = 'confirmed' WHERE id = ANY($1)", &[&ids]).await.unwrap();
    wait_ready(&c, &ids).await;
    crate::daemon::assert_exactly_one_live_meeting_each(&c, &ids).await;

    let (moved, cancelled) = (ids[0], ids[1]);
    let before = meeting(&c, moved).await;
    market::reschedule_hours(&c, moved, 3).await;
    market::set_status(&c, cancelled, "cancelled").await;
    eventually("the reschedule and the cancel followed", WAIT, || async {
        let moved_ok = count(
            &c,
            &format!(
                "SELECT count(*) FROM meetingd.meetings m JOIN bookings b ON b.id = m.booking_id
                  WHERE b.id = '{moved}' AND m.state = 'live' AND m.start_time = b.start_time"
            ),
        )
        .await
            == 1;
        let cancel_ok = meeting(&c, cancelled).await.status.as_deref() == Some("deleted");
        (moved_ok && cancel_ok).then_some(())
    })
    .await;
    assert_eq!(meeting(&c, moved).await.link, before.link, "a move keeps the link");
    assert!(meeting(&c, cancelled).await.link.is_none(), "a cancel clears the link");
    daemon.stop(STOP).await;
    assert!(!bouncer.log().contains("unsupported startup parameter"), "{}", bouncer.log());
}

#[tokio::test]
async fn two_daemons_through_pgbouncer_link_every_booking_once() {
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(2);
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ids = market::book_many(&c, m.online, m.customer, 150).await;
    let config = pooled_config(&db, &bouncer);
    let (a, b) = (start_daemon(config.clone()), start_daemon(config));
    c.execute("UPDATE bookings SET status = 'confirmed' WHERE id = ANY($1)", &[&ids]).await.unwrap();
    wait_ready(&c, &ids).await;
    a.stop(STOP).await;
    b.stop(STOP).await;
    crate::daemon::assert_exactly_one_live_meeting_each(&c, &ids).await;
    let daemons = count(
        &c,
        "SELECT count(DISTINCT actor) FROM meetingd.audit_log WHERE action = 'meeting.create' AND outcome = 'ok'",
    )
    .await;
    assert!(daemons >= 1, "creates were recorded");
}

#[tokio::test]
async fn status_and_check_work_through_pgbouncer() {
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(2);
    let url = bouncer.url_for(&db.url);
    let envs = [
        ("MEETINGD_DATABASE__URL", url.as_str()),
        ("MEETINGD_DATABASE__POOLER", "pgbouncer-transaction"),
        ("MEETINGD_DATABASE__MIGRATION_URL", db.url.as_str()),
        ("MEETINGD_WORKER__LISTEN", "false"),
    ];
    let out = meetingd(&["status"], &envs);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pending"), "{}", text(&out));
    let out = meetingd(&["check"], &envs);
    assert!(out.status.success(), "{}", text(&out));
    let out = meetingd(&["bookings", "retry", "--all-failed"], &envs);
    assert!(out.status.success(), "{}", text(&out));

    let listening = [
        ("MEETINGD_DATABASE__URL", url.as_str()),
        ("MEETINGD_DATABASE__POOLER", "pgbouncer-transaction"),
        ("MEETINGD_DATABASE__MIGRATION_URL", db.url.as_str()),
    ];
    let out = meetingd(&["check"], &listening);
    assert!(!out.status.success() && text(&out).contains("worker.listen must be false"), "{}", text(&out));
}

/// A worker statement behind an app transaction that holds the booking row gives up after
/// `database.lock_timeout_ms`, and the booking is linked once the app lets go.
async fn lock_timeout_holds(config: Config, db: &TestDb) {
    let c = db.client().await;
    let m = market::seed(&c).await;
    let booking = market::book(&c, m.online, m.customer, "confirmed").await;
    // The app holds the booking row (and the job row its trigger wrote) for longer than the timeout.
    let mut app = db.client().await;
    let tx = app.transaction().await.unwrap();
    tx.execute("UPDATE bookings SET notes = 'app holds this' WHERE id = $1", &[&booking]).await.unwrap();
    let daemon = start_daemon(config);
    eventually("a worker statement gave up on the app's row lock", WAIT, || async {
        let lock_timeouts = count(
            &c,
            "SELECT count(*) FROM pg_stat_activity a
              WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
                AND a.backend_type = 'client backend' AND a.query NOT LIKE 'UPDATE bookings SET notes%'",
        )
        .await;
        (lock_timeouts > 0).then_some(())
    })
    .await;
    // Waiting longer than the timeout, nobody is still waiting: every wait ended by itself.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_waiting_long = count(
        &c,
        "SELECT count(*) FROM pg_stat_activity a
          WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
            AND now() - a.query_start > interval '1 second'",
    )
    .await;
    assert_eq!(still_waiting_long, 0, "a statement waited for the app's lock past lock_timeout");
    tx.commit().await.unwrap();
    eventually("linked once the app let go", WAIT, || async {
        (meeting(&c, booking).await.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn lock_timeout_through_pgbouncer() {
    let db = TestDb::migrated().await;
    let bouncer = PgBouncer::start(2);
    let mut config = pooled_config(&db, &bouncer);
    config.database.lock_timeout_ms = 300;
    lock_timeout_holds(config, &db).await;
}

#[tokio::test]
async fn lock_timeout_direct() {
    let db = TestDb::migrated().await;
    let mut config = db.config();
    config.database.lock_timeout_ms = 300;
    lock_timeout_holds(config, &db).await;
}
