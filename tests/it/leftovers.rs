//! Nothing left behind when the marketplace changes around a booking: deleted services and
//! providers, services switched to in-person or moved to another provider, providers who
//! reconnect with another account, accounts that are gone or unreadable, links the app wrote.

use meetingd_testkit::market::{self, events, job, meeting};
use uuid::Uuid;

use crate::google::{G, connect_google_as, setup_with};

async fn linked(g: &G) -> (Uuid, String) {
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let event = state.meeting_id.unwrap();
    assert!(g.google.event(&event).is_some_and(|e| !e.deleted));
    (b, event)
}

fn deleted(g: &G, event: &str) -> bool {
    g.google.event(event).is_some_and(|e| e.deleted)
}

#[tokio::test]
async fn deleting_a_service_deletes_the_events_of_its_cascaded_bookings() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    g.c.execute("DELETE FROM services WHERE id = $1", &[&g.service]).await.unwrap();
    assert_eq!(job(&g.c, b).await.unwrap().state, "pending", "the cascaded delete re-armed the job");
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event), "the event of a booking deleted with its service is deleted");
    let state: String =
        g.c.query_one("SELECT state FROM meetingd.meetings WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(state, "deleted");
}

#[tokio::test]
async fn deleting_the_provider_deletes_their_events_through_the_account_meetingd_kept() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    // Cascades to the services, their bookings and the integration row with its tokens.
    g.c.execute("DELETE FROM users WHERE id = $1", &[&g.m.provider]).await.unwrap();
    assert_eq!(market::count(&g.c, "SELECT count(*) FROM user_meeting_integrations").await, 0);
    assert_eq!(market::count(&g.c, "SELECT count(*) FROM meetingd.retired_integrations").await, 1);
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event), "the deleted provider's event is deleted");
    assert_eq!(job(&g.c, b).await.unwrap().state, "done");
    assert_eq!(market::count(&g.c, "SELECT count(*) FROM meetingd.orphaned_meetings").await, 0);
}

#[tokio::test]
async fn a_service_switched_to_in_person_loses_its_events_and_a_later_cancel_changes_nothing() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    g.c.execute("UPDATE services SET is_online = false WHERE id = $1", &[&g.service]).await.unwrap();
    assert_eq!(job(&g.c, b).await.unwrap().state, "pending", "the service change re-armed its bookings");
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event));
    assert_eq!(meeting(&g.c, b).await.link, None);

    // Back online, then cancelled while in-person: the cancel still reaches meetingd.
    g.c.execute("UPDATE services SET is_online = true WHERE id = $1", &[&g.service]).await.unwrap();
    g.worker.run_once().await.unwrap();
    let again = meeting(&g.c, b).await.meeting_id.unwrap();
    assert_ne!(again, event, "a new generation after the deletion");
    g.c.execute("UPDATE services SET is_online = false WHERE id = $1", &[&g.service]).await.unwrap();
    g.c.execute("UPDATE bookings SET status = 'cancelled' WHERE id = $1", &[&b]).await.unwrap();
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &again));
    assert!(g.google.live_events().is_empty());
}

#[tokio::test]
async fn a_service_moved_to_another_provider_moves_the_meeting_to_their_account() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    let other = market::user(&g.c, "provider").await;
    let (access, refresh) = g.google.issue_for("other@example.com");
    connect_google_as(&g.config, other, &access, &refresh, 3600, "other@example.com").await;
    g.c.execute("UPDATE services SET provider_id = $2 WHERE id = $1", &[&g.service, &other]).await.unwrap();
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event), "the first provider's event is gone");
    let live = g.google.live_events();
    assert_eq!(live.len(), 1, "exactly one live event");
    assert_eq!(live[0].owner, "other@example.com");
    assert_eq!(live[0].booking_id(), Some(b.to_string()));
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
}

#[tokio::test]
async fn a_provider_who_reconnects_another_account_keeps_one_event_in_the_account_that_made_it() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    let (access, refresh) = g.google.issue_for("second@example.com");
    connect_google_as(&g.config, g.m.provider, &access, &refresh, 3600, "second@example.com").await;

    // A reschedule moves the event where it lives, through the first account's kept credentials.
    market::reschedule_hours(&g.c, b, 2).await;
    g.worker.run_once().await.unwrap();
    let live = g.google.live_events();
    assert_eq!(live.len(), 1, "no second event: {:?}", g.google.calls());
    assert_eq!(live[0].owner, meetingd_testkit::fake_google::DEFAULT_ACCOUNT);
    assert_eq!(meeting(&g.c, b).await.meeting_id.as_deref(), Some(event.as_str()));

    // A cancel deletes it there too.
    market::set_status(&g.c, b, "cancelled").await;
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event));
    assert!(g.google.live_events().is_empty());
}

#[tokio::test]
async fn a_meeting_whose_account_is_gone_is_reported_orphaned_not_counted_as_deleted() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    // The provider connects another account, and the first one's credentials are lost.
    let (access, refresh) = g.google.issue_for("second@example.com");
    connect_google_as(&g.config, g.m.provider, &access, &refresh, 3600, "second@example.com").await;
    g.c.execute("DELETE FROM meetingd.retired_integrations", &[]).await.unwrap();

    market::set_status(&g.c, b, "cancelled").await;
    g.worker.run_once().await.unwrap();
    assert!(!deleted(&g, &event), "nobody could delete it");
    let row =
        g.c.query_one("SELECT external_id, reason FROM meetingd.orphaned_meetings WHERE booking_id = $1", &[&b])
            .await
            .unwrap();
    assert_eq!(row.get::<_, String>(0), event);
    assert!(row.get::<_, String>(1).contains("no longer connected"), "{}", row.get::<_, String>(1));
    let reported = events(&g.c, b).await;
    assert!(
        reported.iter().any(|(kind, message)| kind == "meeting_orphaned" && message.contains(&event)),
        "{reported:?}"
    );
    let trail = market::audit(&g.c, b).await;
    assert!(trail.contains(&("meeting.orphaned".to_string(), "failed".to_string())), "{trail:?}");
    assert_eq!(meeting(&g.c, b).await.link, None, "the booking shows no dead link");
    let url = secrecy::ExposeSecret::expose_secret(&g.config.database.url).to_string();
    let status = crate::cli::text(&crate::cli::meetingd(&["status"], &[("MEETINGD_DATABASE__URL", &url)]));
    assert!(
        status.contains("orphans       1 meeting(s) exist at their platform") && status.contains(&event),
        "{status}"
    );
}

#[tokio::test]
async fn an_account_whose_tokens_do_not_decrypt_is_retried_and_its_meeting_stays_recorded_live() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    crate::google::tamper_access_tokens(&g.c).await;
    market::set_status(&g.c, b, "cancelled").await;
    g.worker.run_once().await.unwrap();
    let j = job(&g.c, b).await.unwrap();
    assert_eq!(j.state, "pending", "retried: {j:?}");
    assert!(j.due_later);
    let state: String =
        g.c.query_one("SELECT state FROM meetingd.meetings WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(state, "live", "never recorded as deleted");
    assert!(!deleted(&g, &event));
    assert_eq!(market::count(&g.c, "SELECT count(*) FROM meetingd.orphaned_meetings").await, 0);
}

/// The reconcile sweep with the test's configuration.
async fn sweep(g: &G, dry_run: bool) -> meetingd::reconcile::Report {
    sweep_with(&g.config, dry_run).await
}

/// The reconcile sweep over every platform `config` enables, as `meetingd reconcile` runs it.
pub(crate) async fn sweep_with(config: &meetingd::config::Config, dry_run: bool) -> meetingd::reconcile::Report {
    let pool = meetingd::db::pool(&config.database, 2).unwrap();
    let deps = meetingd::providers::ProviderDeps {
        pool: pool.clone(),
        keyring: std::sync::Arc::new(config.encryption.keyring().unwrap()),
        actor: "admin:reconcile".into(),
    };
    let providers = meetingd::providers::Providers::real(config, &deps).unwrap();
    let options = meetingd::reconcile::Options { dry_run, provider: None, pause: std::time::Duration::ZERO };
    meetingd::reconcile::sweep(&pool, &providers, "admin:reconcile", options).await.unwrap()
}

/// Puts an event straight into the fake's calendar of the default account.
fn plant(g: &G, id: &str, booking: Option<Uuid>) {
    let start = chrono::Utc::now() + chrono::Duration::days(2);
    let mut body = serde_json::json!({
        "id": id, "status": "confirmed", "summary": "planted",
        "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()},
    });
    if let Some(b) = booking {
        body["extendedProperties"] = serde_json::json!({"private": {"booking_id": b.to_string()}});
    }
    g.google.plant(body);
}

#[tokio::test]
async fn the_reconcile_sweep_deletes_what_no_booking_wants_and_remakes_what_vanished() {
    use meetingd::providers::google::event_id;
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    let (vanishing, lost_event) = linked(&g).await;
    // Leaks from outside meetingd's bookkeeping: an event for a booking that no longer exists, a
    // second event for a booking that has its own, and the provider's own event (no mark).
    let nobody = Uuid::new_v4();
    plant(&g, &event_id(nobody, 1), Some(nobody));
    plant(&g, &event_id(b, 7), Some(b));
    plant(&g, "holidayinthesun", None);
    // Deleted in Google Calendar by someone else.
    g.google.state.lock().unwrap().events.get_mut(&lost_event).unwrap().deleted = true;

    let looked = sweep(&g, true).await;
    assert_eq!(looked.strays.len(), 2, "{looked:?}");
    assert_eq!(looked.vanished, vec![vanishing]);
    assert_eq!(looked.deleted, 0);
    assert!(!deleted(&g, &event_id(nobody, 1)), "a dry run deletes nothing");

    let done = sweep(&g, false).await;
    assert_eq!((done.deleted, done.vanished.len()), (2, 1), "{done:?}");
    assert!(deleted(&g, &event_id(nobody, 1)) && deleted(&g, &event_id(b, 7)));
    assert!(!deleted(&g, &event), "the booking's own event stays");
    assert!(g.google.event("holidayinthesun").is_some_and(|e| !e.deleted), "an event without meetingd's mark stays");
    g.worker.run_once().await.unwrap();
    let remade = meeting(&g.c, vanishing).await;
    assert_eq!(remade.status.as_deref(), Some("ready"));
    assert_ne!(remade.meeting_id.as_deref(), Some(lost_event.as_str()), "a new event for the vanished one");
    assert!(g.google.event(&remade.meeting_id.unwrap()).is_some_and(|e| !e.deleted));
    assert_eq!(sweep(&g, false).await.strays.len(), 0, "a second sweep finds nothing");
}

#[tokio::test]
async fn the_sweep_after_a_reconnect_does_not_take_the_old_accounts_meetings_for_vanished() {
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    // The provider reconnects with another Google account: the row stays, the account changes.
    let (access, refresh) = g.google.issue_for("second@example.com");
    connect_google_as(&g.config, g.m.provider, &access, &refresh, 3600, "second@example.com").await;
    let swept = sweep(&g, false).await;
    assert!(
        swept.vanished.is_empty(),
        "the old account's event is not in the new one's listing, yet not gone: {swept:?}"
    );
    assert!(!deleted(&g, &event));
    let state: String =
        g.c.query_one("SELECT state FROM meetingd.meetings WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(state, "live");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_before_a_reconnect_is_deleted_where_it_was_made() {
    use meetingd_testkit::fake_google::{DEFAULT_ACCOUNT, Fail};
    let g = setup_with(3600, |_| {}).await;
    // Google makes the event, and the answer is lost.
    g.google.fail_next([Fail { after_work: true, ..Fail::status(503, "backendError") }]);
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let first = meetingd::providers::google::event_id(b, 1);
    assert!(g.google.event(&first).is_some_and(|e| !e.deleted && e.owner == DEFAULT_ACCOUNT));
    assert_eq!(job(&g.c, b).await.unwrap().state, "pending");

    // The provider reconnects with another account before the retry.
    let (access, refresh) = g.google.issue_for("second@example.com");
    connect_google_as(&g.config, g.m.provider, &access, &refresh, 3600, "second@example.com").await;
    market::make_due(&g.c).await;
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &first), "the unrecorded event is deleted in the account it was made in");
    let live = g.google.live_events();
    assert_eq!(live.len(), 1, "{:?}", g.google.calls());
    assert_eq!(live[0].owner, "second@example.com");
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
}

/// The provider's reconnect to another Google account (`second@example.com`) lands while a job
/// runs: a trigger on `meetingd.jobs` swaps the integration row to the new account, as the
/// connect flow does, when the job row is updated as `when` says (SQL over OLD and NEW).
async fn reconnect_mid_run(g: &G, when: &str) {
    use meetingd::crypto::{Column, Owner};
    use secrecy::SecretString;
    let (access, refresh) = g.google.issue_for("second@example.com");
    let row: Uuid =
        g.c.query_one("SELECT id FROM user_meeting_integrations WHERE user_id = $1", &[&g.m.provider])
            .await
            .unwrap()
            .get(0);
    let keyring = g.config.encryption.keyring().unwrap();
    let owner = Owner { user_id: g.m.provider, platform: "google_meet" };
    let sealed = |t: &str, column| keyring.encrypt(&SecretString::from(t.to_string()), row, column);
    g.c.batch_execute(&format!(
        "CREATE TABLE swap (access text, refresh text, used boolean NOT NULL DEFAULT false);
         INSERT INTO swap (access, refresh) VALUES ('{}', '{}');
         CREATE FUNCTION swap_account() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF {when} THEN
             UPDATE user_meeting_integrations u
                SET access_token = s.access, refresh_token = s.refresh, platform_user_email = 'second@example.com'
               FROM swap s WHERE NOT s.used;
             UPDATE swap SET used = true;
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER swap_account AFTER UPDATE ON meetingd.jobs FOR EACH ROW EXECUTE FUNCTION swap_account();",
        sealed(&access, Column::AccessToken(owner)),
        sealed(&refresh, Column::RefreshToken(owner)),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reconnect_found_by_a_token_read_after_the_claim_makes_no_meeting_in_an_account_the_intent_does_not_name() {
    use meetingd_testkit::fake_google::DEFAULT_ACCOUNT;
    // The access token the claim reads along is due for a refresh, so the create's token read
    // does not use it but reads the provider's row again.
    let g = setup_with(60, |_| {}).await;
    // Right after the claim read the booking's account and recorded the intent for it (the
    // swap lands in the claim's transaction, after its snapshot): the row read again names the
    // new account.
    reconnect_mid_run(&g, "NEW.lease_token IS NOT NULL AND OLD.lease_token IS NULL").await;
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let swapped: bool = g.c.query_one("SELECT used FROM swap", &[]).await.unwrap().get(0);
    assert!(swapped, "the reconnect happened mid-run");
    assert!(
        g.google.live_events().is_empty(),
        "nothing is made in an account the intent does not name: {:?}",
        g.google.calls()
    );
    assert_eq!(job(&g.c, b).await.unwrap().state, "pending", "retried");

    market::make_due(&g.c).await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = g.google.live_events();
    assert_eq!(live.len(), 1, "exactly one meeting: {:?}", g.google.calls());
    assert_eq!(live[0].owner, "second@example.com", "in the account connected now");
    assert!(!live.iter().any(|e| e.owner == DEFAULT_ACCOUNT));
}

#[tokio::test]
async fn a_reconnect_committed_after_the_intent_leaves_the_meeting_in_the_account_the_intent_names() {
    use meetingd_testkit::fake_google::DEFAULT_ACCOUNT;
    let g = setup_with(3600, |_| {}).await;
    // In the statement that records the intent: the token is read with the intent, in one
    // snapshot, so the create acts in the account the intent names, whatever commits after.
    reconnect_mid_run(&g, "NEW.intent_platform IS NOT NULL AND OLD.intent_platform IS NULL").await;
    let b = market::book(&g.c, g.service, g.m.customer, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let swapped: bool = g.c.query_one("SELECT used FROM swap", &[]).await.unwrap().get(0);
    assert!(swapped, "the reconnect happened mid-run");
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let live = g.google.live_events();
    assert_eq!(live.len(), 1, "exactly one meeting: {:?}", g.google.calls());
    assert_eq!(live[0].owner, DEFAULT_ACCOUNT, "in the account the intent names");
    let account: Option<String> =
        g.c.query_one("SELECT account FROM meetingd.meetings WHERE booking_id = $1", &[&b]).await.unwrap().get(0);
    assert_eq!(account.as_deref(), Some(DEFAULT_ACCOUNT), "and recorded as made there");
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_then_a_reconfirm_ends_with_a_live_meeting() {
    use meetingd_testkit::fake_google::Fail;
    let g = setup_with(3600, |_| {}).await;
    let (b, event) = linked(&g).await;
    // The cancel's delete is done at Google, and its answer lost.
    g.google.fail_next([Fail { after_work: true, ..Fail::status(502, "backendError") }]);
    market::set_status(&g.c, b, "cancelled").await;
    g.worker.run_once().await.unwrap();
    assert!(deleted(&g, &event));
    // The booking is confirmed again before the delete's retry.
    market::set_status(&g.c, b, "confirmed").await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!(state.status.as_deref(), Some("ready"), "{state:?}");
    let now = state.meeting_id.unwrap();
    assert!(g.google.event(&now).is_some_and(|e| !e.deleted), "the booking shows a live event, not {event}");
    assert_eq!(g.google.live_events().len(), 1);
}
