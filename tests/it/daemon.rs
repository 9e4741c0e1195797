//! The daemon as a whole: started late, racing another instance, killed, disconnected, stopped.

use std::sync::Arc;
use std::time::Duration;

use meetingd::RunError;
use meetingd::providers::{Platform, Providers};
use meetingd_testkit::Running;
use meetingd_testkit::daemon::{DaemonCommand, InProcess as Daemon};
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::market::{self, audit, count, meeting};
use uuid::Uuid;

use crate::helpers::scripted::{Failure, Scripted};

const WAIT: Duration = Duration::from_secs(30);

/// How long a daemon may take to stop once told to.
const STOP: Duration = Duration::from_secs(10);

async fn ready_count(c: &tokio_postgres::Client) -> i64 {
    count(c, "SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await
}

async fn wait_ready(c: &tokio_postgres::Client, n: i64) {
    eventually(&format!("{n} bookings linked"), WAIT, || async { (ready_count(c).await == n).then_some(()) }).await;
}

/// Every booking in `ids` has exactly one live meeting, the one its link shows, created once.
pub async fn assert_exactly_one_live_meeting_each(c: &tokio_postgres::Client, ids: &[Uuid]) {
    let rows = c
        .query(
            "SELECT b.id,
                    (SELECT count(*) FROM meetingd.meetings m WHERE m.booking_id = b.id AND m.state = 'live'
                        AND m.join_url = b.meeting_link AND m.start_time = b.start_time),
                    (SELECT count(*) FROM meetingd.audit_log a
                      WHERE a.booking_id = b.id AND a.action = 'meeting.create' AND a.outcome = 'ok')
               FROM bookings b WHERE b.id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ids.len());
    for r in rows {
        let (id, live, creates): (Uuid, i64, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((live, creates), (1, 1), "booking {id}: live meetings matching its link, recorded creates");
    }
    let distinct = count(c, "SELECT count(DISTINCT meeting_link) FROM bookings WHERE meeting_link IS NOT NULL").await;
    assert_eq!(distinct, ids.len() as i64, "every link is different");
}

#[tokio::test]
async fn bookings_confirmed_while_no_daemon_runs_are_linked_when_it_starts() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ids = market::book_many(&c, m.online, m.customer, 25).await;
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();

    let mut config = db.config();
    config.worker.sweep_interval_ms = 600_000; // only the start-up scan can find them
    let daemon = Daemon::start(config.clone(), Providers::from_config(&config));
    wait_ready(&c, 25).await;
    assert_exactly_one_live_meeting_each(&c, &ids).await;
    let link = meeting(&c, ids[0]).await.link.unwrap();
    assert!(link.starts_with("https://meet.jit.si/meetingd-"), "{link}");
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn a_retry_and_a_stale_result_are_taken_up_without_waiting_for_the_sweep() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let platform = Scripted::new(Platform::Jitsi);
    let mut config = db.config();
    config.worker.sweep_interval_ms = 600_000; // the sweep cannot be what finds them
    config.worker.retry_base_ms = 300;
    config.worker.retry_max_ms = 600;
    let daemon = Daemon::start(config, Providers::default().with(platform.clone()));

    // A failed attempt: the dispatcher wakes when its retry falls due.
    platform.fail_next([Failure::Transient]);
    let retried = market::book(&c, m.online, m.customer, "pending").await;
    market::set_status(&c, retried, "confirmed").await;
    wait_ready(&c, 1).await;
    assert_eq!(audit(&c, retried).await.len(), 2, "one failed attempt, one that linked");

    // A result made stale by a reschedule during the platform call: claimed again at once.
    let gate = platform.gate();
    let moved = market::book(&c, m.online, m.customer, "pending").await;
    market::set_status(&c, moved, "confirmed").await;
    gate.entered.notified().await;
    platform.ungate();
    market::reschedule_hours(&c, moved, 1).await;
    gate.release.notify_one();
    wait_ready(&c, 2).await;
    assert_exactly_one_live_meeting_each(&c, &[retried, moved]).await;
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn two_daemons_on_one_database_never_do_the_same_work() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ids = market::book_many(&c, m.online, m.customer, 300).await;
    let platform = Scripted::new(Platform::Jitsi);
    let providers = Providers::default().with(platform.clone());
    let a = Daemon::start(db.config(), providers.clone());
    let b = Daemon::start(db.config(), providers);
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();
    wait_ready(&c, 300).await;

    let creates = platform.creates();
    assert_eq!(creates.len(), 300, "one platform create per booking");
    assert!(platform.live_per_booking().values().all(|&n| n == 1));
    assert_exactly_one_live_meeting_each(&c, &ids).await;
    let workers = count(&c, "SELECT count(DISTINCT actor) FROM meetingd.audit_log").await;
    assert_eq!(workers, 2, "both daemons took part");
    a.stop(STOP).await;
    b.stop(STOP).await;
}

#[tokio::test]
async fn junk_on_the_channel_is_ignored_and_the_daemon_keeps_working() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let config = db.config();
    let daemon = Daemon::start(config.clone(), Providers::from_config(&config));
    for junk in ["garbage", "", "-1", "99999999999999999999999", "{\"id\": 1}", "'; DROP TABLE bookings; --"] {
        c.execute("SELECT pg_notify('meetingd', $1)", &[&junk]).await.unwrap();
    }
    c.execute("SELECT pg_notify('meetingd', repeat('x', 7000))", &[]).await.unwrap();
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    wait_ready(&c, 1).await;
    assert!(!daemon.task.is_finished());
    assert_eq!(meeting(&c, b).await.status.as_deref(), Some("ready"));
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn a_killed_listen_connection_reconnects_and_rescans() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let mut config = db.config();
    config.worker.sweep_interval_ms = 600_000; // the sweep cannot be what finds the booking
    let daemon = Daemon::start(config.clone(), Providers::from_config(&config));
    let listen_sql = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    let pid: i32 =
        eventually("LISTEN session", WAIT, || async { c.query_opt(listen_sql, &[]).await.unwrap().map(|r| r.get(0)) })
            .await;
    c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    // Confirmed while the listener is down: the NOTIFY is lost, the rescan after reconnecting is not.
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    wait_ready(&c, 1).await;
    let new_pid: i32 = eventually("a new LISTEN session", WAIT, || async {
        c.query_opt(listen_sql, &[]).await.unwrap().map(|r| r.get::<_, i32>(0)).filter(|p| *p != pid)
    })
    .await;
    assert_ne!(new_pid, pid);
    // And notifications work again on the new connection.
    let b2 = market::book(&c, m.online, m.customer, "confirmed").await;
    wait_ready(&c, 2).await;
    assert_exactly_one_live_meeting_each(&c, &[b, b2]).await;
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn poll_only_mode_works_without_listen() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let mut config = db.config();
    config.worker.listen = false;
    let daemon = Daemon::start(config.clone(), Providers::from_config(&config));
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    wait_ready(&c, 1).await;
    let listening =
        count(&c, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
            .await;
    assert_eq!(listening, 0);
    market::set_status(&c, b, "cancelled").await;
    eventually("meeting deleted", WAIT, || async {
        (meeting(&c, b).await.status.as_deref() == Some("deleted")).then_some(())
    })
    .await;
    daemon.stop(STOP).await;
}

fn spawn_daemon(db: &TestDb) -> Running {
    DaemonCommand::new(env!("CARGO_BIN_EXE_meetingd"), &db.url, &meetingd::crypto::Keyring::generate_key())
        .set("WORKER__LEASE_SECS", "5")
        .set("WORKER__CONCURRENCY", "8")
        .set("WORKER__SWEEP_INTERVAL_MS", "500")
        .log("warn")
        .spawn_quiet()
}

#[tokio::test]
async fn sigkill_mid_batch_then_restart_links_every_booking_once() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let m = market::seed(&c).await;
    let ids = market::book_many(&c, m.online, m.customer, 200).await;
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();

    // Hold 5 bookings locked so the daemon's write-backs for them hang mid-batch (5 of its 8
    // slots); the other slots link the rest.
    let held: Vec<Uuid> = ids[..5].to_vec();
    let blocker = c.transaction().await.unwrap();
    blocker.execute("SELECT 1 FROM bookings WHERE id = ANY($1) FOR UPDATE", &[&held]).await.unwrap();

    let observer = db.client().await;
    let mut first = spawn_daemon(&db);
    eventually("the first daemon to link the others and block on the held ones", WAIT, || async {
        let blocked = count(
            &observer,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                AND application_name = 'meetingd' AND wait_event_type = 'Lock'",
        )
        .await;
        (ready_count(&observer).await == 195 && blocked > 0).then_some(())
    })
    .await;
    first.kill(); // SIGKILL
    blocker.commit().await.unwrap();

    let mut second = spawn_daemon(&db);
    wait_ready(&c, 200).await;
    assert_exactly_one_live_meeting_each(&c, &ids).await;
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.jobs WHERE state <> 'done'").await, 0);
    second.kill();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let platform = Scripted::new(Platform::Jitsi);
    let gate = platform.gate();
    let daemon = Daemon::start(db.config(), Providers::default().with(platform.clone()));
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    gate.entered.notified().await;
    daemon.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!daemon.task.is_finished(), "waits for the in-flight job");
    gate.release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), daemon.task).await.unwrap().unwrap().unwrap();
    assert_eq!(meeting(&c, b).await.status.as_deref(), Some("ready"));
    let _ = Arc::strong_count(&platform);
}

/// A TCP front for the test database that refuses sessions (closes them at once) until `open`.
async fn gate_in_front_of(db_url: &str) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    let target = {
        let config: tokio_postgres::Config = db_url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            other => panic!("a TCP database for this test, not {other:?}"),
        };
        format!("{host}:{}", config.get_ports()[0])
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let is_open = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                drop(inbound);
                continue;
            }
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let config: tokio_postgres::Config = db_url.parse().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{}", config.get_dbname().unwrap());
    (url, open)
}

#[tokio::test]
async fn a_database_not_yet_reachable_at_start_up_is_waited_for() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    let (url, open) = gate_in_front_of(&db.url).await;
    let mut config = db.config();
    config.database.url = secrecy::SecretString::from(url);
    config.database.startup_wait_secs = 30;
    let daemon = Daemon::start(config, Providers::default().with(Scripted::new(Platform::Jitsi)));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!daemon.task.is_finished(), "still waiting for the database, not exited");
    assert_eq!(ready_count(&c).await, 0);
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_ready(&c, 1).await;
    assert_eq!(meeting(&c, b).await.status.as_deref(), Some("ready"));
    daemon.stop(STOP).await;
}

#[tokio::test]
async fn a_database_that_never_answers_fails_start_up_after_the_wait() {
    let db = TestDb::migrated().await;
    let (url, _closed) = gate_in_front_of(&db.url).await;
    let mut config = db.config();
    config.database.url = secrecy::SecretString::from(url);
    config.database.startup_wait_secs = 1;
    let daemon = Daemon::start(config, Providers::default());
    let result = tokio::time::timeout(Duration::from_secs(10), daemon.task).await.expect("gives up in time").unwrap();
    assert!(matches!(result, Err(RunError::Db(_))), "{result:?}");
}
