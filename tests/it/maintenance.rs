//! Installing on a live marketplace (backfill) and keeping meetingd's tables small (prune).

use meetingd_testkit::db::TestDb;
use meetingd_testkit::market::{self, count, meeting};
use uuid::Uuid;

use crate::google::worker_for;

#[tokio::test]
async fn backfill_queues_only_confirmed_future_online_bookings_without_a_link() {
    // A marketplace with bookings made before meetingd was installed.
    let db = TestDb::marketplace_only().await;
    let mut c = db.client().await;
    let provider = market::user(&c, "provider").await;
    let customer = market::user(&c, "customer").await;
    let service = |online: bool| {
        let c = &c;
        async move {
            c.query_one(
                "INSERT INTO services (provider_id, title, is_online) VALUES ($1, 'Session', $2) RETURNING id",
                &[&provider, &online],
            )
            .await
            .unwrap()
            .get::<_, Uuid>(0)
        }
    };
    let (online, in_person) = (service(true).await, service(false).await);
    let insert = |service: Uuid, status: &'static str, hours: i32, link: Option<&'static str>| {
        let c = &c;
        async move {
            c.query_one(
                "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, meeting_link)
                 VALUES ($1, $2, now() + make_interval(hours => $3), now() + make_interval(hours => $3 + 1), $4, $5)
                 RETURNING id",
                &[&service, &customer, &hours, &status, &link],
            )
            .await
            .unwrap()
            .get::<_, Uuid>(0)
        }
    };
    let wanted = insert(online, "confirmed", 24, None).await;
    let past = insert(online, "confirmed", -48, None).await;
    let in_person = insert(in_person, "confirmed", 24, None).await;
    let hand_set = insert(online, "confirmed", 24, Some("https://zoom.example.com/j/1")).await;
    let pending = insert(online, "pending", 24, None).await;
    meetingd::db::migrate::migrate(&mut c).await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.jobs").await, 0, "installing queues nothing");

    let out = crate::cli::meetingd(&["backfill", "--dry-run"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    let text = crate::cli::text(&out);
    assert!(out.status.success() && text.contains("1 confirmed future booking(s)"), "{text}");
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.jobs").await, 0, "a dry run queues nothing");

    let out = crate::cli::meetingd(&["backfill"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    assert!(crate::cli::text(&out).contains("queued 1 "), "{}", crate::cli::text(&out));
    worker_for(&db.config()).run_once().await.unwrap();
    assert_eq!(meeting(&c, wanted).await.status.as_deref(), Some("ready"));
    for untouched in [past, in_person, hand_set, pending] {
        assert!(market::job(&c, untouched).await.is_none(), "{untouched} was left alone");
    }
    assert_eq!(meeting(&c, hand_set).await.link.as_deref(), Some("https://zoom.example.com/j/1"));
    let out = crate::cli::meetingd(&["backfill"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    assert!(crate::cli::text(&out).contains("queued 0 "), "a second backfill finds nothing");
}

#[tokio::test]
async fn prune_deletes_what_retention_no_longer_keeps_and_never_a_job_that_matters() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let worker = worker_for(&db.config());
    let live = market::book(&c, m.online, m.customer, "confirmed").await;
    let gone = market::book(&c, m.online, m.customer, "confirmed").await;
    worker.run_once().await.unwrap();
    market::set_status(&c, gone, "cancelled").await;
    worker.run_once().await.unwrap();
    // Everything meetingd wrote is old now.
    c.batch_execute(
        "UPDATE meetingd.jobs SET completed_at = now() - interval '40 days';
         UPDATE meetingd.audit_log SET at = now() - interval '100 days';
         UPDATE meetingd.events SET created_at = now() - interval '40 days';
         INSERT INTO meetingd.audit_log (actor, action, outcome) VALUES ('test', 'recent', 'ok');
         INSERT INTO meetingd.oauth_states (state_hash, user_id, platform, pkce_verifier, expires_at)
         VALUES ('expired', gen_random_uuid(), 'google_meet', 'x', now() - interval '1 hour'),
                ('fresh', gen_random_uuid(), 'google_meet', 'x', now() + interval '5 minutes');
         INSERT INTO meetingd.retired_integrations (integration_id, user_id, platform, access_token, reason, retired_at)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'google_meet', 'ct', 'deleted', now() - interval '3 days');",
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO meetingd.retired_integrations (integration_id, user_id, platform, access_token, reason, retired_at)
         SELECT gen_random_uuid(), $1, 'google_meet', 'ct', 'deleted', now() - interval '3 days'",
        &[&m.provider],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE meetingd.meetings SET integration_id = (SELECT integration_id FROM meetingd.retired_integrations WHERE user_id = $2)
          WHERE booking_id = $1",
        &[&live, &m.provider],
    )
    .await
    .unwrap();

    let out = crate::cli::meetingd(&["prune"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    let text = crate::cli::text(&out);
    assert!(out.status.success(), "{text}");
    assert!(market::job(&c, live).await.is_some(), "the job of a live meeting stays");
    assert!(market::job(&c, gone).await.is_none(), "the finished job of a cancelled booking goes");
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.audit_log").await, 1, "{text}");
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.events").await, 0);
    assert_eq!(count(&c, "SELECT count(*) FROM meetingd.oauth_states").await, 1);
    assert_eq!(
        count(&c, "SELECT count(*) FROM meetingd.retired_integrations").await,
        1,
        "the copy a live meeting needs stays"
    );
    // The booking is still re-armed by the marketplace: its job was kept.
    c.execute("DELETE FROM services WHERE id = $1", &[&m.online]).await.unwrap();
    assert_eq!(market::job(&c, live).await.unwrap().state, "pending");
}
