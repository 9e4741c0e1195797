//! The soak's schema and seed data: the marketplace's tables loosened as real marketplaces are,
//! meetingd's migrations, providers with Google, Zoom or Microsoft Teams connections, bookings (some
//! with NULL columns), the services the chaos deletes, and the fake Google's, the fake Zoom's and
//! the fake Graph's chaos rules. Set-up only: it changes nothing once the chaos has begun but what the chaos asks for.

use anyhow::{Context, Result, ensure};
use meetingd::admin::NewIntegration;
use meetingd::crypto::Keyring;
use meetingd::fixtures::MARKETPLACE_FIXTURE;
use meetingd::providers::Platform;
use meetingd_testkit::fake_google::{Fail, FakeGoogle};
use meetingd_testkit::fake_graph::{self, FakeGraph};
use meetingd_testkit::fake_zoom::{self, FakeZoom, Trouble};
use meetingd_testkit::market;
use secrecy::SecretString;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::db::Db;
use crate::{
    DOOMED_BOOKINGS, DOOMED_SERVICES, DOOMED_TAG, ODD_BOOKINGS, ODD_TAG, PROVIDERS, SLOW_ANSWER, TAG, TEAMS_PROVIDERS,
    ZOOM_PROVIDERS,
};

/// The marketplace's tables first (meetingd's migrations refuse to run without them), then meetingd's.
pub async fn prepare_schema(db: &mut Client) -> Result<()> {
    db.batch_execute(MARKETPLACE_FIXTURE).await.context("loading the marketplace fixture")?;
    // Real marketplaces are looser than the reference schema.
    db.batch_execute(
        "ALTER TABLE services ALTER COLUMN title DROP NOT NULL;
         ALTER TABLE bookings ALTER COLUMN start_time DROP NOT NULL, ALTER COLUMN customer_id DROP NOT NULL",
    )
    .await
    .context("loosening the marketplace columns")?;
    meetingd::db::migrate::migrate(db).await.context("running meetingd's migrations")?;
    Ok(())
}

/// The fakes the providers connect to.
#[derive(Clone, Copy)]
pub struct Fakes<'a> {
    pub google: &'a FakeGoogle,
    pub zoom: &'a FakeZoom,
    pub graph: &'a FakeGraph,
    /// What reads the marks in the Zoom meetings' agendas (the daemons' key).
    pub marks: &'a meetingd::providers::zoom::Marks,
}

/// Providers with an online service and a connection each (`zoom` for [`ZOOM_PROVIDERS`], `teams`
/// for [`TEAMS_PROVIDERS`], `google_meet` for the others), customers, and `n` pending bookings round-robin over the
/// services, one hour apart from tomorrow on.
pub async fn seed(db: &mut Db, fakes: Fakes<'_>, key: &SecretString, n: u32) -> Result<()> {
    let providers = i32::try_from(PROVIDERS).context("provider count")?;
    let customers = i32::try_from(n.min(50)).context("customer count")?;
    db.query(
        "INSERT INTO users (email, full_name, role)
         SELECT format('provider-%s@soak.example', g), format('Soak provider %s', g), 'provider'
           FROM generate_series(1, $1::int) g
         UNION ALL
         SELECT format('customer-%s@soak.example', g), format('Soak customer %s', g), 'customer'
           FROM generate_series(1, $2::int) g",
        &[&providers, &customers],
    )
    .await
    .context("seeding users")?;
    db.query(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, 'Soak session', 'Online session', 60, true, 'google_meet' FROM users WHERE role = 'provider'",
        &[],
    )
    .await
    .context("seeding services")?;
    connect_providers(db, fakes, key).await?;
    seed_bookings(db, n).await?;
    seed_odd_rows(db).await
}

/// NULL columns: the first provider's service has no title, every 25th booking no customer, and
/// a few bookings no start time; plus the services the chaos deletes, with their own bookings.
async fn seed_odd_rows(db: &mut Db) -> Result<()> {
    db.query(
        "UPDATE services SET title = NULL
          WHERE id = (SELECT s.id FROM services s JOIN users u ON u.id = s.provider_id ORDER BY u.email LIMIT 1)",
        &[],
    )
    .await
    .context("a service without a title")?;
    db.query(
        "UPDATE bookings SET customer_id = NULL
          WHERE id IN (SELECT id FROM bookings WHERE notes = $1 ORDER BY start_time OFFSET 3 LIMIT 1000)
            AND extract(hour FROM start_time)::int % 25 = 0",
        &[&TAG],
    )
    .await
    .context("bookings without a customer")?;
    db.query(
        "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
         SELECT (SELECT id FROM services ORDER BY id LIMIT 1), NULL, NULL,
                date_trunc('hour', now()) + make_interval(days => 2, hours => g), 'pending', $1
           FROM generate_series(1, $2::int) g",
        &[&ODD_TAG, &ODD_BOOKINGS],
    )
    .await
    .context("bookings without a start time")?;
    let doomed = i64::try_from(DOOMED_SERVICES).context("doomed services")?;
    db.query(
        "WITH p AS (SELECT id FROM users WHERE role = 'provider' ORDER BY email DESC LIMIT $1),
              s AS (INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
                    SELECT id, 'Doomed session', 'Deleted during the soak', 60, true, 'google_meet' FROM p
                    RETURNING id)
         INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
         SELECT s.id, (SELECT id FROM users WHERE role = 'customer' ORDER BY id LIMIT 1),
                date_trunc('hour', now()) + make_interval(days => 3, hours => g),
                date_trunc('hour', now()) + make_interval(days => 3, hours => g + 1), 'pending', $2
           FROM s, generate_series(1, $3::int) g",
        &[&doomed, &DOOMED_TAG, &DOOMED_BOOKINGS],
    )
    .await
    .context("the services the chaos deletes")?;
    Ok(())
}

/// A connection per provider, tokens issued by the fake: Zoom for [`ZOOM_PROVIDERS`] (whose
/// services switch to `zoom`), Microsoft for [`TEAMS_PROVIDERS`] (to `teams`), Google for the others. On each platform every other access token
/// expires in 30 s (meetingd refreshes five minutes ahead, so at its first use).
async fn connect_providers(db: &mut Db, fakes: Fakes<'_>, key: &SecretString) -> Result<()> {
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let rows = db.query("SELECT id FROM users WHERE role = 'provider' ORDER BY email", &[]).await?;
    let mut zoom_users: Vec<Uuid> = Vec::new();
    let mut teams_users: Vec<Uuid> = Vec::new();
    let connections: Vec<NewIntegration> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let (user, email) = (row.get(0), format!("provider-{i}@soak.example"));
            if ZOOM_PROVIDERS.contains(&i) {
                let expires_in = if zoom_users.len().is_multiple_of(2) { 3600 } else { 30 };
                zoom_users.push(user);
                zoom_account(fakes.zoom, user, i, &email, expires_in)
            } else if TEAMS_PROVIDERS.contains(&i) {
                let expires_in = if teams_users.len().is_multiple_of(2) { 3600 } else { 30 };
                teams_users.push(user);
                teams_account(fakes.graph, user, i, &email, expires_in)
            } else {
                let expires_in = if i % 2 == 0 { 3600 } else { 30 };
                google_account(fakes.google, user, &email, expires_in)
            }
        })
        .collect();
    market::store_integrations(db.client_mut(), &keyring, "soak", &connections).await?;
    db.query("UPDATE services SET meeting_platform = 'zoom' WHERE provider_id = ANY($1)", &[&zoom_users])
        .await
        .context("switching services to Zoom")?;
    db.query("UPDATE services SET meeting_platform = 'teams' WHERE provider_id = ANY($1)", &[&teams_users])
        .await
        .context("switching services to Teams")?;
    Ok(())
}

/// A Teams connection of `user`, provider `n`, to a work account (a mailbox) of its own, with
/// tokens the fake issued at consent.
fn teams_account(graph: &FakeGraph, user: Uuid, n: usize, email: &str, expires_in: i64) -> NewIntegration {
    let graph_user = teams_user_id(n);
    let (access, refresh) = graph.issue_for(&graph_user);
    market::connection(Platform::Teams, user, &access, &refresh, expires_in, Some(&graph_user), email)
}

/// The Graph user id (a GUID, as work accounts have) of provider `n`'s Microsoft account: the
/// fake's first work account with the provider's number in its last group.
fn teams_user_id(n: usize) -> String {
    let work = fake_graph::WORK_USER_ID;
    format!("{}{n:012}", &work[..work.len() - 12])
}

/// A Zoom connection of `user`, provider `n`, to a Zoom account of its own, with tokens the fake
/// issued at consent.
fn zoom_account(zoom: &FakeZoom, user: Uuid, n: usize, email: &str, expires_in: i64) -> NewIntegration {
    let (access, refresh) = zoom.issue();
    let host = format!("soakZoomHost{n}");
    market::connection(Platform::Zoom, user, &access, &refresh, expires_in, Some(&host), email)
}

/// A Google connection of `user` to the fake's account `email`.
fn google_account(google: &FakeGoogle, user: Uuid, email: &str, expires_in: i64) -> NewIntegration {
    let (access, refresh) = google.issue_for(email);
    market::google_connection(user, &access, &refresh, expires_in, email)
}

/// The provider `n` (by e-mail order) connects another Google account, as a provider who
/// switches accounts on the consent screen does; their existing events stay in the first one.
pub async fn reconnect_provider(db: &mut Db, google: &FakeGoogle, key: &SecretString, n: usize) -> Result<String> {
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let offset = i64::try_from(n).context("provider index")?;
    let row = db
        .query_one("SELECT id FROM users WHERE role = 'provider' ORDER BY email OFFSET $1 LIMIT 1", &[&offset])
        .await?;
    let email = format!("second-account-{n}@soak.example");
    let new = google_account(google, row.get(0), &email, 3600);
    market::store_integrations(db.client_mut(), &keyring, "soak", &[new]).await.context("reconnecting a provider")?;
    Ok(email)
}

/// Deletes one of the doomed services; its bookings go with it. How many bookings went.
pub async fn delete_doomed_service(db: &mut Db) -> Result<u64> {
    let rows = db
        .query(
            "WITH gone AS (DELETE FROM services WHERE id = (SELECT id FROM services WHERE title = 'Doomed session'
                                                             ORDER BY id LIMIT 1)
                           RETURNING id)
             SELECT count(*) FROM bookings b JOIN gone ON b.service_id = gone.id",
            &[],
        )
        .await
        .context("deleting a service")?;
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
}

async fn seed_bookings(db: &mut Db, n: u32) -> Result<()> {
    let count = i32::try_from(n).context("--bookings")?;
    let rows = db
        .query(
            "WITH s AS (SELECT array_agg(id ORDER BY id) AS ids FROM services),
                  c AS (SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE role = 'customer')
             INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
             SELECT s.ids[1 + g % cardinality(s.ids)], c.ids[1 + g % cardinality(c.ids)],
                    date_trunc('hour', now()) + make_interval(days => 1, hours => g),
                    date_trunc('hour', now()) + make_interval(days => 1, hours => g + 1),
                    'pending', $2
               FROM s, c, generate_series(0, $1::int - 1) g
             RETURNING id",
            &[&count, &TAG],
        )
        .await
        .context("seeding bookings")?;
    ensure!(rows.len() == n as usize, "seeded {} bookings instead of {n}", rows.len());
    db.query("ANALYZE", &[]).await.context("analyzing the seeded tables")?;
    Ok(())
}

/// Random failures on every Calendar call (about 11 % in all).
pub fn google_chaos_rules() -> Vec<(f64, Fail)> {
    vec![
        (0.05, Fail::status(503, "backendError")),
        (0.03, Fail { retry_after: Some("1".into()), ..Fail::status(429, "rateLimitExceeded") }),
        // Slower than meetingd's time-out: it gives up; nothing was done.
        (0.01, Fail { delay: Some(SLOW_ANSWER), ..Fail::status(200, "slow") }),
        // Done, but the answer is lost.
        (0.02, Fail { after_work: true, ..Fail::status(502, "backendError") }),
    ]
}

/// Random trouble on every Zoom Meetings API call (about 14 % in all). Never the daily limit,
/// which stops a provider's creates until midnight.
pub fn zoom_chaos_rules() -> Vec<(f64, Trouble)> {
    vec![
        (0.04, Trouble::Fail(fake_zoom::Fail::new(503, 0, "Service Unavailable"))),
        (0.02, Trouble::Fail(fake_zoom::Fail::rate_limited(Some("1")))),
        (0.02, Trouble::Fail(fake_zoom::Fail::rate_limited(None))),
        // The access token expired early: meetingd refreshes, and the refresh token rotates.
        (0.01, Trouble::Fail(fake_zoom::Fail::invalid_token())),
        // Done, but the answer is lost: a create is found again by its marker.
        (0.03, Trouble::Fail(fake_zoom::Fail::lost_answer())),
        // Slower than meetingd's time-out: nothing done, or done with the answer too late.
        (0.01, Trouble::Slow { delay: SLOW_ANSWER, after_work: false }),
        (0.01, Trouble::Slow { delay: SLOW_ANSWER, after_work: true }),
    ]
}

/// Random failures of Zoom's token endpoint, before it rotates anything.
pub fn zoom_token_chaos_rules() -> Vec<(f64, fake_zoom::Fail)> {
    vec![(0.05, fake_zoom::Fail::new(503, 0, "Service Unavailable"))]
}

/// Random trouble on every Graph call (about 14 % in all).
pub fn graph_chaos_rules() -> Vec<(f64, fake_graph::Trouble)> {
    use fake_graph::{Fail as GraphFail, Trouble as GraphTrouble};
    vec![
        (0.04, GraphTrouble::Fail(GraphFail::throttled(503, "1"))),
        (0.03, GraphTrouble::Fail(GraphFail::throttled(429, "1"))),
        // The access token expired early: meetingd refreshes (the old refresh token stays valid).
        (0.01, GraphTrouble::Fail(GraphFail::new(401, "InvalidAuthenticationToken"))),
        // Done, but the answer is lost: a createOrGet answers the same meeting when repeated.
        (0.03, GraphTrouble::Fail(GraphFail::lost_answer())),
        // Slower than meetingd's time-out: nothing done, or done with the answer too late.
        (0.01, GraphTrouble::Slow { delay: SLOW_ANSWER, after_work: false }),
        (0.01, GraphTrouble::Slow { delay: SLOW_ANSWER, after_work: true }),
    ]
}

/// Random failures of Microsoft's token endpoint: before it does anything, or after rotating the
/// refresh token (harmless: the old one stays valid).
pub fn graph_token_chaos_rules() -> Vec<(f64, fake_graph::Fail)> {
    vec![
        (0.04, fake_graph::Fail::new(503, "temporarily_unavailable")),
        (0.02, fake_graph::Fail { after_work: true, ..fake_graph::Fail::new(503, "temporarily_unavailable") }),
    ]
}
