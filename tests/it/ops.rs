//! Operations: systemd notifications, metrics, health.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use meetingd::RunError;
use meetingd_testkit::daemon::DaemonCommand;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::market;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn systemd_sees_ready_then_watchdog_then_stopping() {
    let db = TestDb::migrated().await;
    let dir = std::env::temp_dir().join(format!("meetingd-notify-{}", db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let key = meetingd::crypto::Keyring::generate_key();
    let mut daemon = DaemonCommand::new(env!("CARGO_BIN_EXE_meetingd"), &db.url, &key)
        .set("WORKER__SWEEP_INTERVAL_MS", "200")
        .set("WORKER__LISTEN_PING_INTERVAL_MS", "200")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .log("warn")
        .spawn_quiet();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent_term = false;
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
        }
        let watchdogs = seen.iter().filter(|l| *l == "WATCHDOG=1").count();
        if !sent_term && watchdogs >= 2 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
            sent_term = true;
        }
        if seen.iter().any(|l| l == "STOPPING=1") {
            break;
        }
    }
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let position =
        |what: &str| seen.iter().position(|l| l == what).unwrap_or_else(|| panic!("{what} not sent: {seen:?}"));
    assert!(position("READY=1") < position("WATCHDOG=1"), "{seen:?}");
    assert!(position("WATCHDOG=1") < position("STOPPING=1"), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("STATUS=ready: ")), "{seen:?}");
    let _ = std::fs::remove_dir_all(dir);
}

struct Ops {
    base: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
}

async fn start_with_ops(db: &TestDb) -> Ops {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let options = meetingd::RunOptions { providers: None, http_listener: None, ops_listener: Some(listener) };
    let task = tokio::spawn(meetingd::run_with(db.config(), options, shutdown.clone()));
    Ops { base, shutdown, task }
}

/// The value of a sample line `name{labels} value` (labels must match exactly as rendered).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_health_answers() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ops = start_with_ops(&db).await;
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", ops.base);
        async move { http.get(url).send().await.ok() }
    };
    eventually("ready", Duration::from_secs(20), || async {
        let r = get("/readyz").await?;
        (r.status() == 200).then_some(())
    })
    .await;
    let ready: serde_json::Value = get("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["listener"], "ok");
    assert_eq!(ready["migrations"], "current");
    assert_eq!(get("/healthz").await.unwrap().status(), 200);

    let linked = "meetingd_jobs_completed_total{platform=\"jitsi\",outcome=\"linked\"}";
    let before = sample(&get("/metrics").await.unwrap().text().await.unwrap(), linked);
    let ids = market::book_many(&c, m.online, m.customer, 20).await;
    c.execute("UPDATE bookings SET status = 'confirmed'", &[]).await.unwrap();
    eventually("20 linked", Duration::from_secs(20), || async {
        (market::count(&c, "SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await == 20).then_some(())
    })
    .await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert_eq!(sample(&text, linked) - before, 20.0, "{text}");
    assert!(sample(&text, "meetingd_jobs_claimed_total") >= 20.0, "{text}");
    assert!(sample(&text, "meetingd_confirm_to_link_seconds_count") >= 20.0, "{text}");
    assert!(
        sample(&text, "meetingd_provider_calls_total{platform=\"jitsi\",operation=\"meeting.create\",outcome=\"ok\"}")
            >= 20.0,
        "{text}"
    );
    // The sampled gauges are there (and say nothing about ids or e-mails).
    eventually("gauges sampled", Duration::from_secs(15), || async {
        let text = get("/metrics").await?.text().await.ok()?;
        (text.contains("meetingd_queue_depth")
            && text.contains("meetingd_pg_notification_queue_usage")
            && text.contains("meetingd_integrations_needing_reconnect")
            && text.contains("meetingd_listener_connected 1"))
        .then_some(())
    })
    .await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for id in &ids {
        assert!(!text.contains(&id.to_string()), "no booking ids in metrics");
    }
    assert!(!text.contains("@example.com"));
    ops.shutdown.cancel();
    ops.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_that_dies_is_restarted_and_readiness_says_so_meanwhile() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let ops = start_with_ops(&db).await;
    let http = reqwest::Client::new();
    let readyz = || {
        let (http, url) = (http.clone(), format!("{}/readyz", ops.base));
        async move {
            let r = http.get(url).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<serde_json::Value>().await.ok()?))
        }
    };
    eventually("ready", Duration::from_secs(20), || async { readyz().await.filter(|(s, _)| *s == 200) }).await;

    // A row of meetingd's own that the claim cannot read makes the dispatcher panic.
    c.batch_execute("ALTER TABLE meetingd.meetings ALTER COLUMN join_url DROP NOT NULL").await.unwrap();
    let poisoned = market::book(&c, m.online, m.customer, "pending").await;
    c.execute(
        "INSERT INTO meetingd.meetings (booking_id, platform, external_id, join_url, start_time, end_time, generation, state)
         VALUES ($1, 'jitsi', 'room', NULL, now(), now() + interval '1 hour', 1, 'live')",
        &[&poisoned],
    )
    .await
    .unwrap();
    market::set_status(&c, poisoned, "confirmed").await;
    let (_, down) = eventually("not ready while the dispatcher is down", Duration::from_secs(20), || async {
        readyz().await.filter(|(s, _)| *s == 503)
    })
    .await;
    assert_eq!(down["dispatcher"], "down: restarting", "{down}");

    // Restarted: bookings are linked again, the one that broke it too once it can be read.
    c.execute("UPDATE meetingd.meetings SET join_url = 'https://meet.jit.si/room' WHERE booking_id = $1", &[&poisoned])
        .await
        .unwrap();
    eventually("ready again", Duration::from_secs(20), || async { readyz().await.filter(|(s, _)| *s == 200) }).await;
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    for booking in [b, poisoned] {
        eventually("linked after the restart", Duration::from_secs(20), || async {
            (market::meeting(&c, booking).await.status.as_deref() == Some("ready")).then_some(())
        })
        .await;
    }
    let metrics = http.get(format!("{}/metrics", ops.base)).send().await.unwrap().text().await.unwrap();
    assert!(sample(&metrics, "meetingd_loop_restarts_total{loop=\"dispatcher\"}") >= 1.0, "{metrics}");
    ops.shutdown.cancel();
    ops.task.await.unwrap().unwrap();
}
