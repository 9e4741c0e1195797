//! The outbox trigger on `bookings`: which changes make a job, and the NOTIFY that goes with it.

use std::time::Duration;

use futures_util::StreamExt;
use meetingd_testkit::db::TestDb;
use meetingd_testkit::market::{self, job};
use tokio_postgres::{AsyncMessage, NoTls};

#[tokio::test]
async fn online_bookings_get_one_job_that_each_relevant_change_rearms() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;

    // Inserted pending: nothing to do yet.
    let b = market::book(&c, m.online, m.customer, "pending").await;
    assert_eq!(job(&c, b).await, None);

    market::set_status(&c, b, "confirmed").await;
    let j1 = job(&c, b).await.expect("confirm makes a job");
    assert_eq!((j1.state.as_str(), j1.version, j1.attempts), ("pending", 1, 0));

    // Unrelated columns and same-value updates do not touch the job.
    c.execute("UPDATE bookings SET notes = 'bring a mat', status = 'confirmed' WHERE id = $1", &[&b]).await.unwrap();
    assert_eq!(job(&c, b).await.unwrap().version, 1);

    c.execute("UPDATE meetingd.jobs SET state = 'done', attempts = 3", &[]).await.unwrap();
    market::reschedule_hours(&c, b, 2).await;
    let j2 = job(&c, b).await.unwrap();
    assert_eq!(
        (j2.id, j2.state.as_str(), j2.version, j2.attempts),
        (j1.id, "pending", 2, 0),
        "one row per booking, re-armed"
    );

    market::set_status(&c, b, "cancelled").await;
    assert_eq!(job(&c, b).await.unwrap().version, 3);
    market::set_status(&c, b, "confirmed").await;
    assert_eq!(job(&c, b).await.unwrap().version, 4);
    c.execute("UPDATE bookings SET end_time = end_time + interval '30 minutes' WHERE id = $1", &[&b]).await.unwrap();
    assert_eq!(job(&c, b).await.unwrap().version, 5);

    // Moving the booking to an in-person service still re-arms it (its meeting must go).
    c.execute("UPDATE bookings SET service_id = $2 WHERE id = $1", &[&b, &m.in_person]).await.unwrap();
    assert_eq!(job(&c, b).await.unwrap().version, 6);

    c.execute("UPDATE bookings SET service_id = $2 WHERE id = $1", &[&b, &m.online]).await.unwrap();
    c.execute("DELETE FROM bookings WHERE id = $1", &[&b]).await.unwrap();
    assert_eq!(job(&c, b).await.unwrap().version, 8, "deleting the booking re-arms its job");

    // Inserted already confirmed.
    let b2 = market::book(&c, m.online, m.customer, "confirmed").await;
    assert_eq!(job(&c, b2).await.unwrap().version, 1);
}

#[tokio::test]
async fn in_person_bookings_never_make_jobs() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let b = market::book(&c, m.in_person, m.customer, "confirmed").await;
    market::set_status(&c, b, "pending").await;
    market::set_status(&c, b, "confirmed").await;
    market::reschedule_hours(&c, b, 1).await;
    market::set_status(&c, b, "cancelled").await;
    c.execute("DELETE FROM bookings WHERE id = $1", &[&b]).await.unwrap();
    assert_eq!(market::count(&c, "SELECT count(*) FROM meetingd.jobs").await, 0);
}

#[tokio::test]
async fn notify_carries_the_job_id_and_only_on_commit() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let b = market::book(&c, m.online, m.customer, "pending").await;

    let (listener, mut conn) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN meetingd").await.unwrap();

    let mut app = db.client().await;
    let t = app.transaction().await.unwrap();
    t.execute("UPDATE bookings SET status = 'confirmed' WHERE id = $1", &[&b]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(),
        "no NOTIFY before the app's commit"
    );
    t.commit().await.unwrap();
    let (channel, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(channel, "meetingd");
    assert_eq!(payload, job(&c, b).await.unwrap().id.to_string());
}

#[tokio::test]
async fn app_transaction_rolled_back_leaves_no_job() {
    let db = TestDb::migrated().await;
    let mut c = db.client().await;
    let m = market::seed(&c).await;
    let b = market::book(&c, m.online, m.customer, "pending").await;
    let t = c.transaction().await.unwrap();
    t.execute("UPDATE bookings SET status = 'confirmed' WHERE id = $1", &[&b]).await.unwrap();
    t.rollback().await.unwrap();
    assert_eq!(job(&c, b).await, None);
}

#[tokio::test]
async fn app_role_without_rights_on_meetingd_schema_can_still_confirm() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let b = market::book(&c, m.online, m.customer, "pending").await;
    let role = format!("app_{}", &db.name[db.name.len() - 8..]);
    c.batch_execute(&format!(
        "CREATE ROLE {role}; GRANT SELECT, UPDATE ON bookings TO {role}; GRANT SELECT ON services TO {role};"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("SET ROLE {role}")).await.unwrap();
    assert!(c.query("SELECT * FROM meetingd.jobs", &[]).await.is_err(), "the app role cannot read meetingd's tables");
    market::set_status(&c, b, "confirmed").await;
    c.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(job(&c, b).await.unwrap().version, 1);
    c.batch_execute(&format!("REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}
