//! The daemon as a least-privileged role: only the grants of `sql/grants.sql`, migrations run by
//! the tables' owner.

use std::sync::Arc;
use std::time::Duration;

use meetingd::providers::{ProviderDeps, Providers};
use meetingd::worker::Worker;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::market::{self, meeting};
use meetingd_testkit::webhook_receiver::{Receiver, SECRET};
use secrecy::SecretString;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::google::connect_google;

const GRANTS: &str = include_str!("../../sql/grants.sql");

/// A login role with exactly the documented grants on `db`; dropped (with its grants) on drop.
struct Role {
    name: String,
    db_url: String,
}

impl Role {
    async fn create(db: &TestDb) -> Role {
        let role = Role::bare(db, "meetingd_daemon").await;
        role.grant(db, &GRANTS.replace(":\"role\"", &role.name)).await;
        role
    }

    /// A login role with no rights at all.
    async fn bare(db: &TestDb, prefix: &str) -> Role {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        db.client().await.batch_execute(&format!("CREATE ROLE {name} LOGIN")).await.unwrap();
        Role { name, db_url: db.url.clone() }
    }

    async fn grant(&self, db: &TestDb, grants: &str) {
        db.client().await.batch_execute(grants).await.expect("the grants apply");
    }

    fn url(&self) -> String {
        let mut url = url::Url::parse(&self.db_url).unwrap();
        url.set_username(&self.name).unwrap();
        url.to_string()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.db_url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = meetingd_testkit::db::connect(&url).await;
                let _ = c.batch_execute(&format!("DROP OWNED BY {name}; DROP ROLE {name}")).await;
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_works_with_only_the_documented_grants() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let role = Role::create(&db).await;
    let mut config = db.config();
    config.database.url = SecretString::from(role.url());
    let receiver = Receiver::start().await;
    config.webhooks.url = receiver.url();
    config.webhooks.secret = SecretString::from(SECRET);

    // The whole daemon: start-up (schema check, the webhook feed switched on), LISTEN, claims and
    // write-backs, webhook deliveries.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = tokio::spawn(meetingd::run_with(config.clone(), meetingd::RunOptions::default(), shutdown.clone()));
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    let linked = || async {
        assert!(!daemon.is_finished(), "the daemon stopped: it lacks a right");
        (meeting(&c, b).await.status.as_deref() == Some("ready")).then_some(())
    };
    eventually("linked by the restricted role", Duration::from_secs(20), linked).await;
    market::set_status(&c, b, "cancelled").await;
    eventually("unlinked by the restricted role", Duration::from_secs(20), || async {
        (meeting(&c, b).await.status.as_deref() == Some("deleted")).then_some(())
    })
    .await;
    eventually("the events delivered as webhooks by the restricted role", Duration::from_secs(20), || async {
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM meetingd.webhook_deliveries",
                &[],
            )
            .await
            .unwrap();
        let (delivered, all): (i64, i64) = (r.get(0), r.get(1));
        (all >= 1 && delivered == all && receiver.received().len() as i64 == all).then_some(())
    })
    .await;
    shutdown.cancel();
    daemon.await.unwrap().expect("the daemon ran as the restricted role");

    // A Google booking with an expired token: the refresh writes the integration row.
    let google = FakeGoogle::start().await;
    google.configure(&mut config);
    let service = market::service(&c, m.provider, true, Some("google_meet")).await;
    let (access, refresh) = google.issue();
    connect_google(&config, m.provider, &access, &refresh, -60).await;
    let pool = meetingd::db::pool(&config.database, 4).unwrap();
    let instance = Uuid::new_v4();
    let deps = ProviderDeps {
        pool: pool.clone(),
        keyring: Arc::new(config.encryption.keyring().unwrap()),
        actor: meetingd::worker::actor(instance),
    };
    let providers = Providers::real(&config, &deps).unwrap();
    let worker = Worker::new(
        pool,
        providers,
        config.worker.clone(),
        config.fallback.platform,
        Arc::new(Notify::new()),
        instance,
    )
    .with_limits(config.limits.clone());
    let g = market::book(&c, service, m.customer, "confirmed").await;
    worker.run_once().await.unwrap();
    let state = meeting(&c, g).await;
    assert_eq!((state.status.as_deref(), state.platform.as_deref()), (Some("ready"), Some("google_meet")), "{state:?}");
    assert_eq!(google.refresh_calls(), 1);
    // The claim took the call's rate-limit tokens: the account's bucket and Google's.
    let buckets = market::count(&c, "SELECT count(*) FROM meetingd.rate_buckets WHERE platform = 'google_meet'").await;
    assert_eq!(buckets, 2);

    // The API's PUT /api/services/{id}/meeting: the rules (over what the daemon published at its
    // start), the service's meeting columns (through the function, not a grant), and a re-arm.
    let api_pool = meetingd::db::pool(&config.database, 1).unwrap();
    let client = api_pool.get().await.unwrap();
    let rearmed = meetingd::db::services::set_meeting(client.sql(), service, Some("jitsi"), &serde_json::json!({}))
        .await
        .expect("the restricted role sets a service's meeting platform")
        .expect("by the rules, which it may read");
    assert_eq!(rearmed, 1);
    let platform: String =
        c.query_one("SELECT meeting_platform FROM services WHERE id = $1", &[&service]).await.unwrap().get(0);
    assert_eq!(platform, "jitsi");
}

/// The grants README.md documents for the app's role ("Choosing a service's meeting platform from
/// SQL"), for role `name`.
fn readme_app_grants(name: &str) -> String {
    const README: &str = include_str!("../../README.md");
    let start = README.find("GRANT USAGE ON SCHEMA meetingd TO app;").expect("README documents the app's grants");
    let block = &README[start..start + README[start..].find("```").unwrap()];
    block.replace(" TO app;", &format!(" TO {name};"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_role_with_the_documented_grants_alone_sets_a_services_platform_by_the_rules() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let config = meetingd::config::Config::defaults();
    let offer = meetingd::providers::offer::offering(
        &Providers::from_config(&config),
        &meetingd::providers::auth::Connectors::default(),
        config.fallback.platform,
    );
    meetingd::db::platforms::publish(meetingd::db::Sql::new(&c, meetingd::db::Mode::DIRECT), &offer, "daemon:test")
        .await
        .unwrap();
    let role = Role::bare(&db, "app").await;
    let app = meetingd_testkit::db::connect(&role.url()).await;
    let set = "SELECT meetingd.set_service_meeting($1, 'jitsi', '{}')";

    // Not for PUBLIC: without the grants, and with the schema but not the functions, refused.
    let denied = |e: tokio_postgres::Error| e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(denied(app.query_one(set, &[&m.online]).await.unwrap_err()));
    role.grant(&db, &format!("GRANT USAGE ON SCHEMA meetingd TO {}", role.name)).await;
    assert!(denied(app.query_one(set, &[&m.online]).await.unwrap_err()), "EXECUTE is not PUBLIC's");

    role.grant(&db, &readme_app_grants(&role.name)).await;
    let offered = market::strings(&app, "SELECT platform FROM meetingd.offered_platforms").await;
    assert_eq!(offered, ["jitsi"]);
    let refusal = app
        .query_one(
            "SELECT code, key FROM meetingd.check_service_meeting($1, 'jitsi', '{\"passcode\": true}')",
            &[&m.online],
        )
        .await
        .unwrap();
    assert_eq!(
        (refusal.get::<_, String>(0), refusal.get::<_, String>(1)),
        ("unsupported_option".into(), "passcode".into())
    );
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    let rearmed: i64 = app.query_one(set, &[&m.online]).await.expect("the app's role sets it").get(0);
    assert_eq!(rearmed, 1);
    let platform: String =
        c.query_one("SELECT meeting_platform FROM services WHERE id = $1", &[&m.online]).await.unwrap().get(0);
    assert_eq!(platform, "jitsi");
    assert!(market::job(&c, b).await.is_some());
    // It has no right on services itself.
    assert!(denied(app.execute("UPDATE services SET meeting_platform = 'zoom'", &[]).await.unwrap_err()));
}
