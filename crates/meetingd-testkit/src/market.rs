//! Seed data: marketplace rows (users, services, bookings), a provider's platform connection stored
//! as meetingd stores it (tokens encrypted with the daemon's keyring), and reading back the state
//! meetingd left on a booking. It writes only the rows it is asked for and commits nothing it did
//! not start; set-based bulk seeding of a benchmark's size stays with the tool that needs it.

use anyhow::Context;
use meetingd::admin::{NewIntegration, store_integration};
use meetingd::crypto::Keyring;
use meetingd::providers::Platform;
use secrecy::SecretString;
use tokio_postgres::Client;
use uuid::Uuid;

/// A connection of `user` on `platform` to the account `platform_user_id` / `email`, with the
/// tokens the platform issued at consent and the scopes meetingd asks for; the access token
/// expires `expires_in_secs` from now.
pub fn connection(
    platform: Platform,
    user: Uuid,
    access: &str,
    refresh: &str,
    expires_in_secs: i64,
    platform_user_id: Option<&str>,
    email: &str,
) -> NewIntegration {
    let scopes = meetingd::providers::auth::spec(platform).map_or(&[][..], |s| s.scopes);
    NewIntegration {
        user_id: user,
        platform,
        access_token: SecretString::from(access.to_string()),
        refresh_token: Some(SecretString::from(refresh.to_string())),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(expires_in_secs)),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        platform_user_id: platform_user_id.map(str::to_string),
        email: Some(email.to_string()),
    }
}

/// A Google connection of `user` to the Google account `email` (Google names an account by its
/// address alone).
pub fn google_connection(user: Uuid, access: &str, refresh: &str, expires_in_secs: i64, email: &str) -> NewIntegration {
    connection(Platform::GoogleMeet, user, access, refresh, expires_in_secs, None, email)
}

/// Stores `new` as the daemon configured by `config` would: over a connection of its own, the
/// tokens encrypted with the configuration's key.
pub async fn store_connection(config: &meetingd::config::Config, new: NewIntegration) {
    use secrecy::ExposeSecret;
    let mut client = crate::db::connect(config.database.url.expose_secret()).await;
    let keyring = config.encryption.keyring().expect("the test configuration has a key");
    store_integrations(&mut client, &keyring, "test", &[new]).await.expect("the connection is stored");
}

/// Stores `connections` in one transaction, as meetingd's own connect flow does (`actor` in the
/// audit trail, tokens encrypted with `keyring`).
pub async fn store_integrations(
    client: &mut Client,
    keyring: &Keyring,
    actor: &str,
    connections: &[NewIntegration],
) -> anyhow::Result<()> {
    let tx = client.transaction().await.context("starting the integrations transaction")?;
    for new in connections {
        let sql = meetingd::db::Sql::new(tx.client(), meetingd::db::Mode::DIRECT).in_transaction();
        store_integration(sql, keyring, actor, new).await.context("storing an integration")?;
    }
    tx.commit().await.context("committing the integrations")?;
    Ok(())
}

pub struct Market {
    pub provider: Uuid,
    pub customer: Uuid,
    /// Online service on Jitsi.
    pub online: Uuid,
    pub in_person: Uuid,
}

pub async fn seed(db: &Client) -> Market {
    let provider = user(db, "provider").await;
    let customer = user(db, "customer").await;
    let online = service(db, provider, true, Some("jitsi")).await;
    let in_person = service(db, provider, false, None).await;
    Market { provider, customer, online, in_person }
}

pub async fn user(db: &Client, role: &str) -> Uuid {
    let id = Uuid::new_v4();
    db.execute(
        "INSERT INTO users (id, email, full_name, role) VALUES ($1, $2, 'Test User', $3)",
        &[&id, &format!("{id}@example.com"), &role],
    )
    .await
    .unwrap();
    id
}

pub async fn service(db: &Client, provider: Uuid, online: bool, platform: Option<&str>) -> Uuid {
    db.query_one(
        "INSERT INTO services (provider_id, title, description, is_online, meeting_platform)
         VALUES ($1, 'Consultation', 'A one-hour session', $2, $3) RETURNING id",
        &[&provider, &online, &platform],
    )
    .await
    .unwrap()
    .get(0)
}

pub async fn book(db: &Client, service: Uuid, customer: Uuid, status: &str) -> Uuid {
    db.query_one(
        "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status)
         VALUES ($1, $2, now() + interval '1 day', now() + interval '1 day 1 hour', $3) RETURNING id",
        &[&service, &customer, &status],
    )
    .await
    .unwrap()
    .get(0)
}

/// `n` pending bookings in one statement.
pub async fn book_many(db: &Client, service: Uuid, customer: Uuid, n: i32) -> Vec<Uuid> {
    db.query(
        "INSERT INTO bookings (service_id, customer_id, start_time, end_time, status)
         SELECT $1, $2, now() + make_interval(hours => g), now() + make_interval(hours => g) + interval '1 hour', 'pending'
           FROM generate_series(1, $3) g RETURNING id",
        &[&service, &customer, &n],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect()
}

pub async fn set_status(db: &Client, booking: Uuid, status: &str) {
    db.execute("UPDATE bookings SET status = $2 WHERE id = $1", &[&booking, &status]).await.unwrap();
}

pub async fn reschedule_hours(db: &Client, booking: Uuid, hours: i32) {
    db.execute(
        "UPDATE bookings SET start_time = start_time + make_interval(hours => $2),
                             end_time = end_time + make_interval(hours => $2) WHERE id = $1",
        &[&booking, &hours],
    )
    .await
    .unwrap();
}

#[derive(Debug, Clone, PartialEq)]
pub struct MeetingState {
    pub status: Option<String>,
    pub link: Option<String>,
    pub meeting_id: Option<String>,
    pub platform: Option<String>,
    pub error: Option<String>,
}

pub async fn meeting(db: &Client, booking: Uuid) -> MeetingState {
    let r = db
        .query_one(
            "SELECT meeting_status, meeting_link, meeting_id, meeting_platform, meeting_error FROM bookings WHERE id = $1",
            &[&booking],
        )
        .await
        .unwrap();
    MeetingState { status: r.get(0), link: r.get(1), meeting_id: r.get(2), platform: r.get(3), error: r.get(4) }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: i64,
    pub state: String,
    pub version: i64,
    pub attempts: i32,
    pub due_later: bool,
    pub last_error: Option<String>,
}

pub async fn job(db: &Client, booking: Uuid) -> Option<Job> {
    db.query_opt(
        "SELECT id, state, version, attempts, run_at > now(), last_error FROM meetingd.jobs WHERE booking_id = $1",
        &[&booking],
    )
    .await
    .unwrap()
    .map(|r| Job {
        id: r.get(0),
        state: r.get(1),
        version: r.get(2),
        attempts: r.get(3),
        due_later: r.get(4),
        last_error: r.get(5),
    })
}

/// Makes every scheduled retry due now, as if its back-off had passed.
pub async fn make_due(db: &Client) {
    db.execute("UPDATE meetingd.jobs SET run_at = now() WHERE state = 'pending'", &[]).await.unwrap();
}

/// Audit rows of a booking as (action, outcome).
pub async fn audit(db: &Client, booking: Uuid) -> Vec<(String, String)> {
    db.query("SELECT action, outcome FROM meetingd.audit_log WHERE booking_id = $1 ORDER BY id", &[&booking])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Events for a booking as (kind, message).
pub async fn events(db: &Client, booking: Uuid) -> Vec<(String, String)> {
    db.query("SELECT kind, message FROM meetingd.events WHERE booking_id = $1 ORDER BY id", &[&booking])
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The first column of every row `sql` answers, as text.
pub async fn strings(db: &Client, sql: &str) -> Vec<String> {
    db.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

pub async fn count(db: &Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).await.unwrap().get(0)
}

/// The audit details of `action` on booking `b`, oldest first.
pub async fn audit_details(db: &Client, b: Uuid, action: &str) -> Vec<String> {
    db.query(
        "SELECT coalesce(detail, '') FROM meetingd.audit_log WHERE booking_id = $1 AND action = $2 ORDER BY id",
        &[&b, &action],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}
