//! Outbound Standard Webhooks: every event POSTed, signed, at least once, to an in-process
//! receiver, by daemons running against real PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use meetingd::config::Config;
use meetingd_testkit::daemon::LISTENING_SESSIONS;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::logs::capture_trace;
use meetingd_testkit::market;
use meetingd_testkit::webhook_receiver::{Receiver, SECRET};
use secrecy::SecretString;
use standardwebhooks::Webhook;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::cli::{meetingd, text};

/// The test database's configuration, sending webhooks to `receiver`: back-off from 400 ms
/// (a first retry after 200 to 400 ms), capped at 1 s.
fn config(db: &TestDb, receiver: &Receiver) -> Config {
    let mut config = db.config();
    config.webhooks.url = receiver.url();
    config.webhooks.secret = SecretString::from(SECRET);
    config.webhooks.retry_base_ms = 400;
    config.webhooks.retry_max_ms = 1000;
    config.webhooks.timeout_ms = 5000;
    config
}

/// A daemon in this process (Jitsi as the only platform).
struct Daemon {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), meetingd::RunError>>,
}

impl Daemon {
    /// Starts one and waits until `listening` daemons listen on the database (the feed is on by then).
    async fn start(config: Config, c: &Client, listening: i64) -> Daemon {
        Self::start_with(config, c, listening, None).await
    }

    /// The same, serving /metrics on `ops`.
    async fn start_with(config: Config, c: &Client, listening: i64, ops: Option<tokio::net::TcpListener>) -> Daemon {
        let shutdown = CancellationToken::new();
        let options = meetingd::RunOptions { providers: None, http_listener: None, ops_listener: ops };
        let task = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));
        eventually("the daemon listens", Duration::from_secs(20), || async {
            assert!(!task.is_finished(), "the daemon stopped");
            let n: i64 = c.query_one(LISTENING_SESSIONS, &[]).await.unwrap().get(0);
            (n == listening).then_some(())
        })
        .await;
        Daemon { shutdown, task }
    }

    /// Stops it cleanly: the POSTs in flight finish first.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("stops in time").unwrap().unwrap();
    }
}

/// `n` events recorded in one statement; their ids.
async fn events(c: &Client, n: i32) -> Vec<i64> {
    c.query(
        "INSERT INTO meetingd.events (kind, message)
         SELECT 'integration_needs_reconnect', 'test event ' || g FROM generate_series(1, $1) g RETURNING id",
        &[&n],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The delivery row's state and attempts.
async fn delivery(c: &Client, event: i64) -> Option<(String, i32)> {
    c.query_opt("SELECT state, attempts FROM meetingd.webhook_deliveries WHERE event_id = $1", &[&event])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

async fn wait_state(c: &Client, event: i64, state: &str) {
    eventually(&format!("event {event} {state}"), Duration::from_secs(30), || async {
        (delivery(c, event).await?.0 == state).then_some(())
    })
    .await;
}

fn verify(received: &meetingd_testkit::webhook_receiver::Received) {
    Webhook::new(SECRET)
        .unwrap()
        .verify(&received.body, &received.headers)
        .expect("the signature verifies with the Standard Webhooks library");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_event_verifies_and_carries_the_event() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    // Recorded before any daemon with webhooks started: history is not sent.
    let before = events(&c, 1).await[0];
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(config(&db, &receiver), &c, 1).await;

    let booking = market::book(&c, m.online, m.customer, "confirmed").await;
    let event: i64 = eventually("the meeting_ready event", Duration::from_secs(20), || async {
        let row = c
            .query_opt("SELECT id FROM meetingd.events WHERE booking_id = $1 AND kind = 'meeting_ready'", &[&booking])
            .await
            .unwrap();
        row.map(|r| r.get(0))
    })
    .await;
    wait_state(&c, event, "delivered").await;
    daemon.stop().await;

    let received = receiver.received();
    assert_eq!(received.len(), 1, "one message, none for the event from before: {received:?}");
    assert_eq!(delivery(&c, before).await, None, "the earlier event is not queued");
    let r = &received[0];
    verify(r);
    let other = Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    assert!(other.verify(&r.body, &r.headers).is_err(), "another secret does not verify");
    assert!(r.id().starts_with("msg_"), "{}", r.id());
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");

    let row = c
        .query_one(
            "SELECT kind, user_id, platform, message,
                    to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')
               FROM meetingd.events WHERE id = $1",
            &[&event],
        )
        .await
        .unwrap();
    let (kind, user, platform, message, at): (String, Option<uuid::Uuid>, Option<String>, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let body = r.json();
    assert_eq!(body["type"], "meeting_ready");
    assert_eq!(body["timestamp"], at.as_str());
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap()).expect("an RFC 3339 timestamp");
    let data = &body["data"];
    assert_eq!(data["event_id"], event);
    assert_eq!(data["kind"], kind.as_str());
    assert_eq!(data["booking_id"], booking.to_string());
    assert_eq!(data["user_id"], serde_json::json!(user.map(|u| u.to_string())));
    assert_eq!(data["platform"], serde_json::json!(platform));
    assert_eq!(platform.as_deref(), Some("jitsi"));
    assert_eq!(data["message"], message.as_str());
    let status: Option<i32> = c
        .query_one("SELECT last_status FROM meetingd.webhook_deliveries WHERE event_id = $1", &[&event])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_same_message_again_after_the_back_off() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500]);
    let daemon = Daemon::start(config(&db, &receiver), &c, 1).await;
    let event = events(&c, 1).await[0];
    wait_state(&c, event, "delivered").await;
    daemon.stop().await;

    let received = receiver.received();
    assert_eq!(received.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 200], "{received:?}");
    assert_eq!(received[0].id(), received[1].id(), "the same webhook-id on every attempt");
    assert_eq!(received[0].body, received[1].body, "the same body on every attempt");
    received.iter().for_each(verify);
    assert!(
        received[1].at - received[0].at >= Duration::from_millis(200),
        "tried again only after the back-off (retry_base_ms 400 with equal jitter: at least 200 ms)"
    );
    assert_eq!(delivery(&c, event).await, Some(("delivered".into(), 2)));
}

/// A receiver that is busy may say until when as an HTTP date (RFC 9110 allows either form): the
/// next attempt waits for it, beyond the back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_given_as_an_http_date_is_a_floor_for_the_next_attempt() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[503]);
    let mut config = config(&db, &receiver);
    config.webhooks.retry_max_ms = 10_000;
    let daemon = Daemon::start(config, &c, 1).await;
    // In whole seconds, so at least 3 s after the answer that follows at once, against a
    // back-off of 200 to 400 ms.
    let until = chrono::Utc::now() + chrono::Duration::seconds(4);
    receiver.retry_after(&until.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    let event = events(&c, 1).await[0];
    wait_state(&c, event, "delivered").await;
    daemon.stop().await;

    let received = receiver.received();
    assert_eq!(received.iter().map(|r| r.answered).collect::<Vec<_>>(), [503, 200], "{received:?}");
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_millis(2500), "the date was a floor: tried again after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_is_sent_by_the_next_daemon_after_a_restart() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[503]);
    let mut long_backoff = config(&db, &receiver);
    // The first daemon's retry would come long after it stopped.
    long_backoff.webhooks.retry_base_ms = 600_000;
    long_backoff.webhooks.retry_max_ms = 600_000;
    let first = Daemon::start(long_backoff, &c, 1).await;
    let event = events(&c, 1).await[0];
    eventually("the first attempt", Duration::from_secs(20), || async {
        (delivery(&c, event).await? == ("pending".into(), 1) && receiver.received().len() == 1).then_some(())
    })
    .await;
    first.stop().await;
    // And one recorded while no daemon runs.
    let quiet = events(&c, 1).await[0];
    assert_eq!(delivery(&c, quiet).await, Some(("pending".into(), 0)));
    // The next daemon finds both in the database (the first one when its retry falls due: made due now).
    c.execute("UPDATE meetingd.webhook_deliveries SET run_at = now() WHERE event_id = $1", &[&event]).await.unwrap();
    let second = Daemon::start(config(&db, &receiver), &c, 1).await;
    wait_state(&c, event, "delivered").await;
    wait_state(&c, quiet, "delivered").await;
    second.stop().await;

    let received = receiver.received();
    assert_eq!(received.len(), 3, "{received:?}");
    assert_eq!(received[0].id(), received[1..].iter().find(|r| r.json()["data"]["event_id"] == event).unwrap().id());
    assert_eq!(delivery(&c, event).await, Some(("delivered".into(), 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_deliver_each_event_exactly_once() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    let one = Daemon::start(config(&db, &receiver), &c, 1).await;
    let two = Daemon::start(config(&db, &receiver), &c, 2).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.extend(events(&c, 10).await);
    }
    eventually("every event delivered", Duration::from_secs(60), || async {
        let n: i64 = c
            .query_one("SELECT count(*) FROM meetingd.webhook_deliveries WHERE state = 'delivered'", &[])
            .await
            .unwrap()
            .get(0);
        (n == ids.len() as i64).then_some(())
    })
    .await;
    one.stop().await;
    two.stop().await;

    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut per_event: HashMap<i64, usize> = HashMap::new();
    for r in receiver.received() {
        *per_id.entry(r.id()).or_default() += 1;
        *per_event.entry(r.json()["data"]["event_id"].as_i64().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(per_id.len(), ids.len());
    assert!(ids.iter().all(|id| per_event.get(id) == Some(&1)), "one message per event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_past_max_age_is_dead_lettered_shown_in_status_and_sent_again_on_retry() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    receiver.otherwise(500);
    let mut short = config(&db, &receiver);
    short.webhooks.max_age_secs = 2;
    short.webhooks.retry_base_ms = 200;
    short.webhooks.retry_max_ms = 400;
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", ops.local_addr().unwrap());
    let daemon = Daemon::start_with(short, &c, 1, Some(ops)).await;
    let event = events(&c, 1).await[0];
    wait_state(&c, event, "dead").await;
    // Counted, and sampled as a gauge (no id or URL in a label).
    let metrics = eventually("the dead letter in the metrics", Duration::from_secs(20), || async {
        let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
        text.lines().any(|l| l == "meetingd_webhooks_dead 1").then_some(text)
    })
    .await;
    for series in ["meetingd_webhook_deliveries_total{outcome=\"retry\"}", "meetingd_webhooks_pending 0"] {
        assert!(metrics.lines().any(|l| l.starts_with(series)), "{series}: {metrics}");
    }
    assert!(metrics.lines().any(|l| l.starts_with("meetingd_webhook_deliveries_total{outcome=\"dead\"}")), "{metrics}");
    assert!(!metrics.contains("receiver-private-token") && !metrics.contains("127.0.0.1"), "{metrics}");
    daemon.stop().await;
    let tries = receiver.received();
    assert!(!tries.is_empty() && tries.iter().all(|r| r.answered == 500), "{tries:?}");

    let status = meetingd(&["status"], &[("DATABASE_URL", &db.url)]);
    let out = text(&status);
    assert!(status.status.success(), "{out}");
    assert!(out.contains("0 pending") && out.contains("1 dead-lettered"), "{out}");

    // Re-driven, it goes out again under the same webhook-id.
    let retry = meetingd(&["webhooks", "retry", "--all-dead"], &[("DATABASE_URL", &db.url)]);
    assert!(retry.status.success() && text(&retry).contains("queued 1"), "{}", text(&retry));
    assert_eq!(delivery(&c, event).await, Some(("pending".into(), 0)));
    receiver.otherwise(200);
    let daemon = Daemon::start(config(&db, &receiver), &c, 1).await;
    wait_state(&c, event, "delivered").await;
    daemon.stop().await;
    let last = receiver.received().pop().unwrap();
    assert_eq!((last.answered, last.id()), (200, tries[0].id()));

    // Switched off: a new event is not queued, and status says so.
    let off = meetingd(&["webhooks", "off"], &[("DATABASE_URL", &db.url)]);
    assert!(off.status.success(), "{}", text(&off));
    let quiet = events(&c, 1).await[0];
    assert_eq!(delivery(&c, quiet).await, None);
    let status = text(&meetingd(&["status"], &[("DATABASE_URL", &db.url)]));
    assert!(status.contains("webhooks      off"), "{status}");
}

/// Current-thread runtime: the daemon, the receiver and every library log on the test's thread,
/// into the capture.
#[tokio::test]
async fn the_secret_and_the_receivers_url_never_reach_a_log() {
    let (logs, _guard) = capture_trace();
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 410]);
    let daemon = Daemon::start(config(&db, &receiver), &c, 1).await;
    let ids = events(&c, 2).await;
    eventually("one delivered after a retry, one gone", Duration::from_secs(30), || async {
        let mut states = Vec::new();
        for id in &ids {
            states.push(delivery(&c, *id).await?.0);
        }
        states.sort();
        (states == ["dead", "delivered"]).then_some(())
    })
    .await;
    daemon.stop().await;

    let check = meetingd(
        &["check"],
        &[
            ("DATABASE_URL", &db.url),
            ("MEETINGD_WEBHOOKS__URL", &receiver.url()),
            ("MEETINGD_WEBHOOKS__SECRET", SECRET),
        ],
    );
    let out = text(&check);
    assert!(out.contains("ok   webhooks") && out.contains("whsec_***"), "{out}");

    let logged = logs.text();
    assert!(logged.contains("webhook not delivered; trying again"), "the failures were logged");
    let key = SECRET.strip_prefix("whsec_").unwrap();
    for (what, text) in [("logs", &logged), ("meetingd check", &out)] {
        assert!(!text.contains(key), "the secret is in the {what}");
        assert!(!text.contains("receiver-private-token"), "the receiver's URL token is in the {what}");
    }
}

#[tokio::test]
async fn prune_removes_old_delivered_and_dead_messages_and_keeps_pending_ones() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    c.batch_execute("INSERT INTO meetingd.webhook_feed DEFAULT VALUES").await.unwrap();
    let ids = events(&c, 5).await;
    c.execute(
        "UPDATE meetingd.webhook_deliveries
            SET state = (ARRAY['delivered', 'delivered', 'dead', 'dead', 'pending'])[(event_id - $1 + 1)::int],
                finished_at = now() - (ARRAY[interval '8 days', interval '1 day', interval '31 days', interval '8 days', NULL])[(event_id - $1 + 1)::int]",
        &[&ids[0]],
    )
    .await
    .unwrap();
    let conn = meetingd::db::pool(&db.config().database, 1).unwrap().get().await.unwrap();
    let pruned = meetingd::db::maintenance::prune(conn.sql(), &db.config().retention).await.unwrap();
    assert_eq!(pruned.webhook_deliveries, 2, "{pruned:?}");
    let left: Vec<i64> = c
        .query("SELECT event_id FROM meetingd.webhook_deliveries ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [ids[1], ids[3], ids[4]], "a recent delivered, a recent dead and the pending one stay");
}
