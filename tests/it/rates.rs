//! Rate limits that hold across daemons: two in-process daemons on one database against the fake
//! Google, whose call timestamps show the rate Google saw per account and for the platform.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meetingd::config::{Config, Pooler};
use meetingd::providers::{ProviderDeps, Providers};
use meetingd_testkit::daemon::InProcess;
use meetingd_testkit::db::{Seeded, TestDb, eventually};
use meetingd_testkit::fake_google::{DEFAULT_ACCOUNT, FakeGoogle};
use meetingd_testkit::market::{self, count};
use meetingd_testkit::pgbouncer::PgBouncer;
use secrecy::SecretString;
use uuid::Uuid;

use crate::google::connect_google_as;

const QUIET_ACCOUNT: &str = "quiet@example.com";

struct Two {
    _db: TestDb,
    c: tokio_postgres::Client,
    google: FakeGoogle,
    config: Config,
    customer: Uuid,
    /// The backlogged provider's service (Google account `DEFAULT_ACCOUNT`).
    busy: Uuid,
    /// Another provider's service (Google account `QUIET_ACCOUNT`).
    quiet: Uuid,
}

async fn setup(adjust: impl FnOnce(&mut Config)) -> Two {
    let Seeded { db, c, m, mut config } = TestDb::seeded().await;
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    config.worker.concurrency = 8;
    config.reconcile.enabled = false;
    adjust(&mut config);
    let quiet_provider = market::user(&c, "provider").await;
    let busy = market::service(&c, m.provider, true, Some("google_meet")).await;
    let quiet = market::service(&c, quiet_provider, true, Some("google_meet")).await;
    let (access, refresh) = google.issue();
    connect_google_as(&config, m.provider, &access, &refresh, 3600, DEFAULT_ACCOUNT).await;
    let (access, refresh) = google.issue_for(QUIET_ACCOUNT);
    connect_google_as(&config, quiet_provider, &access, &refresh, 3600, QUIET_ACCOUNT).await;
    Two { _db: db, c, google, config, customer: m.customer, busy, quiet }
}

impl Two {
    /// A daemon of its own (pool, providers, instance), as a second `meetingd run` would be.
    fn daemon(&self) -> InProcess {
        start(self.config.clone())
    }

    /// A daemon that reaches the database through PgBouncer in transaction mode.
    fn daemon_through(&self, bouncer: &PgBouncer) -> InProcess {
        let mut config = self.config.clone();
        config.database.url = SecretString::from(bouncer.url_for(&self._db.url));
        config.database.migration_url = SecretString::from(self._db.url.clone());
        config.database.pooler = Pooler::PgbouncerTransaction;
        config.worker.listen = false;
        start(config)
    }

    async fn confirm_many(&self, service: Uuid, n: i32) -> Vec<Uuid> {
        let ids = market::book_many(&self.c, service, self.customer, n).await;
        self.c.execute("UPDATE bookings SET status = 'confirmed' WHERE id = ANY($1)", &[&ids]).await.unwrap();
        ids
    }

    async fn ready(&self, ids: &[Uuid]) -> i64 {
        let ids = ids.to_vec();
        self.c
            .query_one("SELECT count(*) FROM bookings WHERE id = ANY($1) AND meeting_status = 'ready'", &[&ids])
            .await
            .unwrap()
            .get(0)
    }

    async fn wait_all_ready(&self, ids: &[Uuid]) {
        eventually("every booking linked", Duration::from_secs(120), || async {
            (self.ready(ids).await == ids.len() as i64).then_some(())
        })
        .await;
    }
}

fn start(config: Config) -> InProcess {
    let pool = meetingd::db::pool(&config.database, 10).unwrap();
    let deps = ProviderDeps {
        pool,
        keyring: Arc::new(config.encryption.keyring().unwrap()),
        actor: meetingd::worker::actor(Uuid::new_v4()),
    };
    let providers = Providers::real(&config, &deps).unwrap();
    InProcess::start(config, providers)
}

/// The most calls inside any window of `window` that starts at a call.
fn most_in_window(times: &[Instant], window: Duration) -> usize {
    (0..times.len()).map(|i| times[i..].iter().take_while(|t| **t < times[i] + window).count()).max().unwrap_or(0)
}

/// Asserts that `times` (sorted) keep to a token bucket of `rate` per second with `burst`: in
/// every window of 2 s at most `burst + 2 * rate` calls, plus one for the moment between a token
/// taken and its call, and after the burst no more than `rate` (10 % slack) on average.
fn assert_within(what: &str, times: &[Instant], rate: f64, burst: usize) {
    let window = Duration::from_secs(2);
    let most = most_in_window(times, window);
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let sustained = (times.len() - burst) as f64 / span;
    eprintln!(
        "{what}: {} calls over {span:.2} s, {sustained:.2}/s after the burst, at most {most} in 2 s",
        times.len()
    );
    let allowed = burst + (2.0 * rate) as usize + 1;
    assert!(most <= allowed, "{what}: {most} calls in 2 s, more than {allowed} ({sustained:.2}/s after the burst)");
    assert!(sustained <= rate * 1.1, "{what}: {sustained:.2} calls/s after the burst, limit {rate}/s");
}

fn within_account_limit(config: &mut Config) {
    config.limits.google_meet.integration_rate = 2.0;
    config.limits.google_meet.integration_burst = 2;
    config.limits.google_meet.platform_rate = 1000.0;
    config.limits.google_meet.platform_burst = 1000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_together_keep_one_account_within_its_rate() {
    let t = setup(within_account_limit).await;
    let bouncer = PgBouncer::start(2);
    let bookings = t.confirm_many(t.busy, 30).await;
    // One of them behind PgBouncer in transaction mode.
    let (a, b) = (t.daemon(), t.daemon_through(&bouncer));
    t.wait_all_ready(&bookings).await;
    a.stop(Duration::from_secs(20)).await;
    b.stop(Duration::from_secs(20)).await;

    let times = t.google.call_times(DEFAULT_ACCOUNT);
    assert_eq!(times.len(), 30, "one insert per booking");
    assert_within("one account, two daemons", &times, 2.0, 2);
    let attempts = count(&t.c, "SELECT COALESCE(max(attempts), 0)::bigint FROM meetingd.jobs").await;
    assert!(attempts <= 1, "a held-back booking spends no attempt (max attempts {attempts})");
    let daemons = count(
        &t.c,
        "SELECT count(DISTINCT actor) FROM meetingd.audit_log WHERE action = 'meeting.create' AND outcome = 'ok'",
    )
    .await;
    assert_eq!(daemons, 2, "both daemons made meetings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlogged_account_does_not_hold_back_another_providers_booking() {
    let t = setup(within_account_limit).await;
    let backlog = t.confirm_many(t.busy, 30).await;
    let (a, b) = (t.daemon(), t.daemon());
    eventually("the backlog is being worked through", Duration::from_secs(60), || async {
        (t.ready(&backlog).await >= 4).then_some(())
    })
    .await;
    let other = t.confirm_many(t.quiet, 1).await;
    let backlog_left = eventually("the other provider's booking linked", Duration::from_secs(60), || async {
        let left = backlog.len() as i64 - t.ready(&backlog).await;
        (t.ready(&other).await == 1).then_some(left)
    })
    .await;
    assert!(backlog_left >= 10, "the other provider waited for the backlog: only {backlog_left} of it left");
    t.wait_all_ready(&backlog).await;
    a.stop(Duration::from_secs(20)).await;
    b.stop(Duration::from_secs(20)).await;
    assert_within("the backlogged account, two daemons", &t.google.call_times(DEFAULT_ACCOUNT), 2.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_together_keep_the_platform_within_its_rate() {
    let t = setup(|c| {
        c.limits.google_meet.integration_rate = 1000.0;
        c.limits.google_meet.integration_burst = 1000;
        c.limits.google_meet.platform_rate = 2.0;
        c.limits.google_meet.platform_burst = 2;
    })
    .await;
    let mut bookings = t.confirm_many(t.busy, 15).await;
    bookings.extend(t.confirm_many(t.quiet, 15).await);
    let (a, b) = (t.daemon(), t.daemon());
    t.wait_all_ready(&bookings).await;
    a.stop(Duration::from_secs(20)).await;
    b.stop(Duration::from_secs(20)).await;

    let mut times = t.google.call_times(DEFAULT_ACCOUNT);
    times.extend(t.google.call_times(QUIET_ACCOUNT));
    times.sort();
    assert_eq!(times.len(), 30, "one insert per booking");
    assert_within("the platform, two accounts, two daemons", &times, 2.0, 2);
}

#[tokio::test]
async fn the_claim_pays_the_first_call_a_further_call_takes_its_own_token_and_idle_buckets_are_pruned() {
    use meetingd::db::{jobs, maintenance, ratelimit};
    use meetingd::providers::Platform;
    use meetingd::ratelimit::Budgets;

    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let service = market::service(&c, m.provider, true, Some("google_meet")).await;
    let (google, jitsi) = (
        market::book(&c, service, m.customer, "confirmed").await,
        market::book(&c, m.online, m.customer, "confirmed").await,
    );
    let mut config = db.config();
    config.limits.google_meet.integration_rate = 0.01;
    config.limits.google_meet.integration_burst = 2;
    let budgets = Budgets::new(&config.limits, |_| true);
    let pool = meetingd::db::pool(&config.database, 2).unwrap();
    let client = pool.get().await.unwrap();

    let claimed =
        jobs::claim(&client, Uuid::new_v4(), 10, Duration::from_secs(60), &budgets, &Default::default()).await.unwrap();
    assert_eq!((claimed.snapshots.len(), claimed.held_back), (2, 0));
    let paid = |b: Uuid| claimed.snapshots.iter().find(|s| s.claim.booking_id == b).unwrap().claim.rate_paid.clone();
    assert_eq!(paid(google).as_deref(), Some("google_meet"), "the claim took the Google call's token");
    assert_eq!(paid(jitsi), None, "Jitsi pays nothing");

    // The burst's second token, then none for 100 s: a turn is kept behind the last one.
    let job = claimed.snapshots[0].claim.job_id;
    let take = || ratelimit::take(client.sql(), job, "google_meet", m.provider, &budgets);
    assert_eq!(take().await.unwrap(), None);
    let wait = take().await.unwrap().expect("no token left");
    assert!(wait > Duration::from_secs(90), "{wait:?}");
    let later = take().await.unwrap().expect("no token left");
    assert!(later > wait + Duration::from_secs(90), "the next turn comes after the one kept: {later:?} vs {wait:?}");
    assert!(!Budgets::new(&config.limits, |p| p != Platform::GoogleMeet).limits(Platform::GoogleMeet));

    // Busy buckets stay; idle ones (full again, no turn kept) go.
    let retention = config.retention.clone();
    assert_eq!(maintenance::prune(client.sql(), &retention).await.unwrap().rate_buckets, 0);
    c.execute("UPDATE meetingd.rate_buckets SET full_at = now() - interval '1 s', reserved_until = '-infinity'", &[])
        .await
        .unwrap();
    assert_eq!(
        maintenance::prune(client.sql(), &retention).await.unwrap().rate_buckets,
        2,
        "the account's and Google's"
    );
}

#[tokio::test]
async fn a_replacement_whose_second_platform_has_no_token_defers_after_the_delete() {
    use crate::helpers::scripted::Scripted;
    use meetingd::providers::Platform;
    use meetingd::ratelimit::Budgets;
    use meetingd::worker::Worker;

    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    for platform in ["google_meet", "zoom"] {
        c.execute(
            "INSERT INTO user_meeting_integrations (user_id, platform, access_token, is_active) VALUES ($1, $2, 'x', true)",
            &[&m.provider, &platform],
        )
        .await
        .unwrap();
    }
    let service = market::service(&c, m.provider, true, Some("google_meet")).await;
    let b = market::book(&c, service, m.customer, "confirmed").await;
    let (google, zoom) = (Scripted::new(Platform::GoogleMeet), Scripted::new(Platform::Zoom));
    let mut config = db.config();
    config.limits.zoom.integration_rate = 0.01;
    config.limits.zoom.integration_burst = 1;
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    let worker = Worker::new(
        pool.clone(),
        Providers::default().with(google.clone()).with(zoom.clone()),
        config.worker.clone(),
        config.fallback.platform,
        Arc::new(tokio::sync::Notify::new()),
        Uuid::new_v4(),
    )
    .with_limits(config.limits.clone());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    assert_eq!(google.live_per_booking().get(&b), Some(&1));

    // Another daemon spent the provider's Zoom token; the service moves to Zoom.
    let budgets = Budgets::new(&config.limits, |_| true);
    let client = pool.get().await.unwrap();
    assert_eq!(meetingd::db::ratelimit::take(client.sql(), 0, "zoom", m.provider, &budgets).await.unwrap(), None);
    c.execute("UPDATE services SET meeting_platform = 'zoom' WHERE id = $1", &[&service]).await.unwrap();
    assert_eq!(worker.run_once().await.unwrap(), 1, "the delete on Google was paid by the claim");
    assert_eq!(google.deletes(), 1);
    assert!(zoom.creates().is_empty(), "no Zoom token: no create");
    let j = market::job(&c, b).await.unwrap();
    assert_eq!(
        (j.state.as_str(), j.due_later, j.attempts),
        ("pending", true, 0),
        "deferred to its turn, no attempt spent"
    );
}
