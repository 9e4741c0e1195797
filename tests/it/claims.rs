//! What a claim prepares for a job's first platform call (`db/jobs/claim.sql`): a synchronous
//! commit where a platform that keeps meetings may be called, and the create intent of a booking
//! that needs a new meeting, so such a job makes its meeting with no write of its own in between.

use std::time::Duration;

use meetingd::db::jobs::{self, ClaimCalls};
use meetingd::job::Intent;
use meetingd::providers::Account;
use meetingd_testkit::fake_google::DEFAULT_ACCOUNT;
use meetingd_testkit::market::{self, job, meeting};
use uuid::Uuid;

use crate::google::setup_with;

fn google_calls() -> ClaimCalls {
    ClaimCalls { keeping: vec!["google_meet".into()], intents: vec!["google_meet".into()] }
}

/// The job row's intent columns: platform and generation.
async fn intent_of(c: &tokio_postgres::Client, booking: Uuid) -> (Option<String>, Option<i32>) {
    let r = c
        .query_one("SELECT intent_platform, intent_generation FROM meetingd.jobs WHERE booking_id = $1", &[&booking])
        .await
        .unwrap();
    (r.get(0), r.get(1))
}

#[tokio::test]
async fn a_google_bookings_claim_records_its_create_intent_durably_and_a_jitsi_claim_stays_asynchronous() {
    let g = setup_with(3600, |_| {}).await;
    let pool = meetingd::db::pool(&g.config.database, 2).unwrap();
    let client = pool.get().await.unwrap();
    let lease = Duration::from_secs(60);

    let jitsi = market::service(&g.c, g.m.provider, true, Some("jitsi")).await;
    let bj = market::book(&g.c, jitsi, g.m.customer, "confirmed").await;
    let claimed = jobs::claim(&client, Uuid::new_v4(), 10, lease, &Default::default(), &google_calls()).await.unwrap();
    let s = &claimed.snapshots[0];
    assert_eq!(s.claim.booking_id, bj);
    assert!(!s.claim.durable, "a Jitsi room exists nowhere: its claim commits asynchronously");
    assert_eq!(s.claim.claimed, None);
    assert_eq!(intent_of(&g.c, bj).await, (None, None));

    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    let claimed = jobs::claim(&client, Uuid::new_v4(), 10, lease, &Default::default(), &google_calls()).await.unwrap();
    let s = &claimed.snapshots[0];
    assert_eq!(s.claim.booking_id, b);
    assert!(s.claim.durable, "a claim that leads to a Google call commits synchronously");
    assert_eq!(s.claim.intent, None, "no intent was recorded before this claim");
    let integration: Uuid =
        g.c.query_one("SELECT id FROM user_meeting_integrations WHERE user_id = $1", &[&g.m.provider])
            .await
            .unwrap()
            .get(0);
    let account =
        Account { user_id: g.m.provider, integration_id: integration, identity: Some(DEFAULT_ACCOUNT.into()) };
    let expected =
        Intent { platform: "google_meet".into(), generation: 1, owner: Some(g.m.provider), account: Some(account) };
    assert_eq!(s.claim.claimed.as_ref(), Some(&expected));
    assert_eq!(intent_of(&g.c, b).await, (Some("google_meet".into()), Some(1)), "committed with the claim");
    assert_eq!(claimed.integrations.len(), 1, "the provider's Google row is read along for the token store");
    assert_eq!((claimed.integrations[0].user_id, claimed.integrations[0].id), (g.m.provider, integration));

    // Without the platforms to prepare for, a claim records nothing and stays asynchronous.
    market::reschedule_hours(&g.c, b, 1).await;
    g.c.execute("UPDATE meetingd.jobs SET intent_platform = NULL, lease_until = NULL WHERE booking_id = $1", &[&b])
        .await
        .unwrap();
    let claimed =
        jobs::claim(&client, Uuid::new_v4(), 10, lease, &Default::default(), &Default::default()).await.unwrap();
    let s = &claimed.snapshots[0];
    assert!(!s.claim.durable);
    assert_eq!(s.claim.claimed, None);
    assert_eq!(intent_of(&g.c, b).await.0, None);
}

/// Records every update of a job row (its state, intent platform and whether it holds a lease)
/// in `job_writes`.
async fn record_job_writes(c: &tokio_postgres::Client) {
    c.batch_execute(
        "CREATE TABLE job_writes (n serial, state text, intent text, lease boolean);
         CREATE FUNCTION record_job_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO job_writes (state, intent, lease) VALUES (NEW.state, NEW.intent_platform, NEW.lease_token IS NOT NULL);
           RETURN NEW;
         END $$;
         CREATE TRIGGER record_job_write AFTER UPDATE ON meetingd.jobs FOR EACH ROW EXECUTE FUNCTION record_job_write();",
    )
    .await
    .unwrap();
}

/// The job-row writes recorded so far, in order, and forgets them.
async fn job_writes(c: &tokio_postgres::Client) -> Vec<(String, Option<String>, bool)> {
    let rows = c.query("DELETE FROM job_writes RETURNING n, state, intent, lease", &[]).await.unwrap();
    let mut writes: Vec<_> = rows.iter().map(|r| (r.get::<_, i32>(0), r.get(1), r.get(2), r.get(3))).collect();
    writes.sort_by_key(|w| w.0);
    writes.into_iter().map(|(_, state, intent, lease)| (state, intent, lease)).collect()
}

#[tokio::test]
async fn a_google_meeting_is_made_and_moved_between_the_claim_and_the_write_back_with_no_write_in_between() {
    let g = setup_with(3600, |_| {}).await;
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    record_job_writes(&g.c).await;
    g.worker.run_once().await.unwrap();
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
    assert_eq!(g.google.live_events().len(), 1);
    assert_eq!(
        job_writes(&g.c).await,
        [("pending".to_string(), Some("google_meet".to_string()), true), ("done".to_string(), None, false)],
        "the claim (with the intent), then the write-back (which settles it)"
    );

    // A reschedule: the claim foresees the call on the meeting's platform and is durable, so
    // the move needs no claim confirmation of its own either.
    market::reschedule_hours(&g.c, b, 2).await;
    job_writes(&g.c).await;
    g.worker.run_once().await.unwrap();
    assert_eq!(g.google.calls().iter().filter(|c| c.starts_with("patch")).count(), 1, "{:?}", g.google.calls());
    assert_eq!(
        job_writes(&g.c).await,
        [("pending".to_string(), None, true), ("done".to_string(), None, false)],
        "the claim, then the write-back"
    );
}

#[tokio::test]
async fn an_intent_the_claim_recorded_but_the_run_did_not_use_is_cleared_without_a_platform_call() {
    let g = setup_with(3600, |_| {}).await;
    // The claim foresees a Google create; the plan fails on the service's settings instead.
    g.c.execute("UPDATE services SET meeting_settings = '{\"lobby\": true}' WHERE id = $1", &[&g.service])
        .await
        .unwrap();
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("failed"));
    assert_eq!(intent_of(&g.c, b).await, (None, Some(1)), "cleared; its generation is never used again");
    assert!(g.google.calls().is_empty(), "nothing to delete: no create was attempted");

    // Once the settings are fixed, the booking gets one meeting, and nothing is deleted first.
    g.c.execute("UPDATE services SET meeting_settings = '{}' WHERE id = $1", &[&g.service]).await.unwrap();
    market::reschedule_hours(&g.c, b, 1).await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    assert_eq!(state.meeting_id, Some(meetingd::providers::google::event_id(b, 2)));
    assert_eq!(g.google.calls(), ["insert primary"]);
}

#[tokio::test]
async fn a_job_given_up_clears_the_intent_its_claim_recorded() {
    let g = setup_with(3600, |config| config.worker.max_attempts = 3).await;
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.c.execute("UPDATE meetingd.jobs SET write_failures = 3 WHERE booking_id = $1", &[&b]).await.unwrap();
    g.worker.run_once().await.unwrap();
    assert_eq!(job(&g.c, b).await.unwrap().state, "failed");
    assert_eq!(intent_of(&g.c, b).await.0, None);
    assert!(g.google.calls().is_empty());
}
