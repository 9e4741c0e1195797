//! Marketplace schemas nobody here wrote: nullable columns, `timestamp` without time zone, an enum
//! status, `json` settings. One odd row fails that one job with a sentence; every other booking is
//! linked.

use meetingd::config::Config;
use meetingd_testkit::db::TestDb;
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::market::{self, job, meeting};
use uuid::Uuid;

use crate::google::{connect_google, worker_for};

/// A marketplace whose columns are looser than the reference schema, with meetingd installed after.
async fn odd_marketplace() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::marketplace_only().await;
    let mut c = db.client().await;
    c.batch_execute(
        "CREATE TYPE booking_state AS ENUM ('pending', 'confirmed', 'cancelled', 'rejected', 'completed');
         ALTER TABLE services ALTER COLUMN title DROP NOT NULL,
                              ADD COLUMN meeting_settings json DEFAULT '{}';
         ALTER TABLE bookings DROP CONSTRAINT bookings_status_check,
                              ALTER COLUMN status DROP DEFAULT,
                              ALTER COLUMN status TYPE booking_state USING status::booking_state,
                              ALTER COLUMN status SET DEFAULT 'pending',
                              ALTER COLUMN start_time DROP NOT NULL,
                              ALTER COLUMN start_time TYPE timestamp USING start_time AT TIME ZONE 'UTC',
                              ALTER COLUMN end_time TYPE timestamp USING end_time AT TIME ZONE 'UTC',
                              ALTER COLUMN customer_id DROP NOT NULL;
         ALTER TABLE users ALTER COLUMN email DROP NOT NULL;",
    )
    .await
    .unwrap();
    meetingd::db::migrate::migrate(&mut c).await.expect("meetingd installs on the odd schema");
    (db, c)
}

async fn book(c: &tokio_postgres::Client, service: Uuid, customer: Option<Uuid>, times: bool) -> Uuid {
    c.query_one(
        "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status)
         VALUES ($1, $2, CASE WHEN $3 THEN timestamp '2031-05-06 10:00' END, timestamp '2031-05-06 11:00', 'confirmed')
         RETURNING id",
        &[&service, &customer, &times],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn odd_and_null_columns_fail_only_their_own_booking_and_the_rest_is_linked() {
    let (db, c) = odd_marketplace().await;
    let google = FakeGoogle::start().await;
    let mut config: Config = db.config();
    google.configure(&mut config);
    let provider = market::user(&c, "provider").await;
    let customer = market::user(&c, "customer").await;
    c.execute("UPDATE users SET email = NULL, full_name = NULL WHERE id = $1", &[&customer]).await.unwrap();
    let untitled: Uuid = c
        .query_one(
            "INSERT INTO services (provider_id, title, is_online, meeting_platform) VALUES ($1, NULL, true, 'google_meet')
             RETURNING id",
            &[&provider],
        )
        .await
        .unwrap()
        .get(0);
    let (access, refresh) = google.issue();
    connect_google(&config, provider, &access, &refresh, 3600).await;
    let worker = worker_for(&config);

    let no_times = book(&c, untitled, Some(customer), false).await;
    let fine = book(&c, untitled, Some(customer), true).await;
    let nobody = book(&c, untitled, None, true).await;
    assert_eq!(worker.run_once().await.unwrap(), 3, "one claim takes all three");

    let failed = meeting(&c, no_times).await;
    assert_eq!(failed.status.as_deref(), Some("failed"));
    assert!(failed.error.as_deref().unwrap().contains("no start or end time"), "{failed:?}");
    assert_eq!(job(&c, no_times).await.unwrap().state, "failed");

    for b in [fine, nobody] {
        let state = meeting(&c, b).await;
        assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
        let event = google.event(&state.meeting_id.unwrap()).unwrap();
        assert_eq!(event.body["summary"], "Online meeting with customer", "a NULL title gets the default topic");
        // `timestamp` without time zone is taken as UTC.
        assert_eq!(event.body["start"]["dateTime"], "2031-05-06T10:00:00Z");
    }
}

#[tokio::test]
async fn a_booking_column_meetingd_cannot_read_fails_that_job_with_a_sentence() {
    let db = TestDb::marketplace_only().await;
    let mut c = db.client().await;
    // Times kept as text: meetingd cannot know what they mean.
    c.batch_execute(
        "ALTER TABLE bookings ALTER COLUMN start_time TYPE text USING to_char(start_time, 'DD/MM/YYYY HH24:MI')",
    )
    .await
    .unwrap();
    meetingd::db::migrate::migrate(&mut c).await.unwrap();
    let m = market::seed(&c).await;
    let b = market::book(&c, m.online, m.customer, "pending").await;
    market::set_status(&c, b, "confirmed").await;
    let worker = worker_for(&db.config());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let state = meeting(&c, b).await;
    assert_eq!(state.status.as_deref(), Some("failed"), "{state:?}");
    let error = state.error.unwrap();
    assert!(error.contains("start_time cannot be read as a time"), "{error}");
}

#[tokio::test]
async fn check_says_what_meetingd_does_with_each_odd_column() {
    let (db, _c) = odd_marketplace().await;
    let out = crate::cli::meetingd(&["check"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    let text = crate::cli::text(&out);
    assert!(out.status.success(), "{text}");
    for line in [
        "ok   column         bookings.start_time timestamp without time zone: read as UTC (no time zone stored); NULL: the booking fails with a sentence",
        "ok   column         services.title text: as expected; NULL: a booking's meeting is titled \"Online meeting\"",
        "ok   column         bookings.status booking_state NOT NULL: an enum, read as its text",
        "ok   column         bookings.customer_id uuid: as expected; NULL: treated as missing",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    // A column meetingd cannot read is a problem check reports.
    let db = TestDb::marketplace_only().await;
    let mut c = db.client().await;
    c.batch_execute("ALTER TABLE bookings ALTER COLUMN end_time TYPE text USING end_time::text").await.unwrap();
    meetingd::db::migrate::migrate(&mut c).await.unwrap();
    let out = crate::cli::meetingd(&["check"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    let text = crate::cli::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL column         bookings.end_time text NOT NULL: not a timestamp"), "{text}");
}
