//! Migrations: onto a populated marketplace, twice in a row, concurrently, and what `status` says.

use meetingd::db::migrate::{self, embedded_count};
use meetingd_testkit::db::{TestDb, connect};
use meetingd_testkit::market;

#[tokio::test]
async fn migrate_onto_populated_database_keeps_rows_and_second_run_is_noop() {
    let db = TestDb::marketplace_only().await;
    let c = db.client().await;
    // The marketplace as it is before meetingd: no meeting columns yet.
    let provider = market::user(&c, "provider").await;
    let customer = market::user(&c, "customer").await;
    let service: uuid::Uuid = c
        .query_one(
            "INSERT INTO services (provider_id, title, is_online) VALUES ($1, 'Yoga', true) RETURNING id",
            &[&provider],
        )
        .await
        .unwrap()
        .get(0);
    let kept = market::book(&c, service, customer, "confirmed").await;
    market::book(&c, service, customer, "pending").await;
    let before = market::count(&c, "SELECT count(*) FROM bookings").await;

    let mut client = connect(&db.url).await;
    let status = migrate::status(meetingd::db::Sql::new(&client, meetingd::db::Mode::DIRECT)).await.unwrap();
    assert_eq!(status.applied, None);
    assert!(!status.is_current());
    assert!(status.explain().contains("meetingd migrate"), "{}", status.explain());

    let first = migrate::migrate(&mut client).await.unwrap();
    assert_eq!(first.applied.len(), embedded_count(), "{:?}", first.applied);
    let second = migrate::migrate(&mut client).await.unwrap();
    assert!(second.applied.is_empty(), "second run applied {:?}", second.applied);
    assert!(migrate::status(meetingd::db::Sql::new(&client, meetingd::db::Mode::DIRECT)).await.unwrap().is_current());

    assert_eq!(market::count(&c, "SELECT count(*) FROM bookings").await, before);
    let row = c
        .query_one(
            "SELECT meeting_status, meeting_platform, meeting_settings = '{}'::jsonb FROM bookings WHERE id = $1",
            &[&kept],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert!(row.get::<_, bool>(2), "existing rows get the column default");
    assert_eq!(market::count(&c, "SELECT count(*) FROM meetingd.jobs").await, 0, "installing makes no jobs by itself");
    // The trigger is live for the existing rows.
    market::reschedule_hours(&c, kept, 1).await;
    assert_eq!(market::job(&c, kept).await.unwrap().version, 1);
    // The seed's table, exactly.
    let columns: Vec<String> = c
        .query(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_name = 'user_meeting_integrations' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "id",
            "user_id",
            "platform",
            "access_token",
            "refresh_token",
            "expires_at",
            "scope",
            "platform_user_id",
            "platform_user_email",
            "is_active",
            "created_at",
            "updated_at"
        ]
    );
    // The history lives in meetingd's own schema.
    assert_eq!(market::count(&c, "SELECT count(*) FROM meetingd.schema_history").await, embedded_count() as i64);
}

#[tokio::test]
async fn concurrent_migrations_serialise_on_the_advisory_lock() {
    let db = TestDb::marketplace_only().await;
    let runs = (0..4).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let mut client = connect(&url).await;
            migrate::migrate(&mut client).await.map(|a| a.applied.len())
        })
    });
    let applied: Vec<usize> =
        futures_util::future::join_all(runs).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(applied.iter().sum::<usize>(), embedded_count(), "each migration applied once: {applied:?}");
}

#[tokio::test]
async fn database_that_already_has_the_seed_migration_is_adopted() {
    let db = TestDb::marketplace_only().await;
    let c = db.client().await;
    c.batch_execute(include_str!("../../sql/migrations/V1__meeting_integrations.sql")).await.unwrap();
    let m = market::seed(&c).await;
    c.execute(
        "INSERT INTO user_meeting_integrations (user_id, platform, access_token) VALUES ($1, 'zoom', 'x')",
        &[&m.provider],
    )
    .await
    .unwrap();
    let mut client = connect(&db.url).await;
    migrate::migrate(&mut client).await.unwrap();
    assert_eq!(market::count(&c, "SELECT count(*) FROM user_meeting_integrations").await, 1);
}

#[tokio::test]
async fn missing_marketplace_tables_are_a_clear_error() {
    let db = TestDb::empty().await;
    let mut client = connect(&db.url).await;
    let err = migrate::migrate(&mut client).await.unwrap_err().to_string();
    assert!(err.contains("users, services, bookings are missing"), "{err}");
    let status = migrate::status(meetingd::db::Sql::new(&client, meetingd::db::Mode::DIRECT)).await.unwrap();
    assert_eq!(status.missing_marketplace_tables, ["users", "services", "bookings"]);
}
