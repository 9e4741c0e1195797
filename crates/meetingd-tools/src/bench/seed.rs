//! The bench's scratch database: the marketplace schema, meetingd's migrations, and every phase's
//! providers, services and pending bookings, set-based (the Google Meet phases' providers with
//! connections at the fake). Set-up only: nothing here is measured.

use anyhow::{Context, Result, ensure};
use meetingd::crypto::Keyring;
use meetingd::fixtures::MARKETPLACE_FIXTURE;
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::market;
use secrecy::SecretString;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{
    Args, BURST_SERVICE, BURST_TAG, GOOGLE_PROVIDERS, GOOGLE_SERVICE, SEQUENTIAL_SERVICE, SEQUENTIAL_TAG, SETTLED_TAG,
};

/// The marketplace's tables first (meetingd's migrations refuse to run without them), then meetingd's.
pub async fn prepare_schema(db: &mut Client) -> Result<()> {
    db.batch_execute(MARKETPLACE_FIXTURE).await.context("loading the marketplace fixture")?;
    meetingd::db::migrate::migrate(db).await.context("running meetingd's migrations")?;
    Ok(())
}

/// Seeds providers, services, customers and every phase's pending bookings, set-based; returns the
/// sequential and the settled bookings' ids in confirmation order.
pub async fn seed(db: &Client, args: &Args) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let providers = i32::try_from(args.providers).context("--providers")?;
    let burst = i32::try_from(args.bookings).context("--bookings")?;
    let sequential = i32::try_from(args.sequential).context("--sequential")?;
    let customers = (burst + sequential).min(1_000);

    db.execute(
        "INSERT INTO users (email, full_name, role)
         SELECT format('provider-%s@bench.example', g), format('Bench provider %s', g), 'provider'
           FROM generate_series(1, $1::int) g
         UNION ALL
         SELECT 'sequential-provider@bench.example', 'Bench sequential provider', 'provider'
         UNION ALL
         SELECT format('customer-%s@bench.example', g), format('Bench customer %s', g), 'customer'
           FROM generate_series(1, $2::int) g",
        &[&providers, &customers],
    )
    .await
    .context("seeding users")?;
    db.execute(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, CASE WHEN email = 'sequential-provider@bench.example' THEN $1 ELSE $2 END,
                'Online session', 60, true, 'jitsi'
           FROM users WHERE role = 'provider'",
        &[&SEQUENTIAL_SERVICE, &BURST_SERVICE],
    )
    .await
    .context("seeding services")?;

    seed_bookings(db, BURST_SERVICE, BURST_TAG, burst, 1).await?;
    // Further in the future than any burst booking, so the two phases never share a slot.
    let sequential_day = 2 + burst / 24;
    seed_bookings(db, SEQUENTIAL_SERVICE, SEQUENTIAL_TAG, sequential, sequential_day).await?;
    seed_bookings(db, SEQUENTIAL_SERVICE, SETTLED_TAG, sequential, sequential_day + 1 + sequential / 24).await?;
    db.batch_execute("ANALYZE").await.context("analyzing the seeded tables")?;

    Ok((booking_ids(db, SEQUENTIAL_TAG).await?, booking_ids(db, SETTLED_TAG).await?))
}

/// `count` pending bookings of the services titled `service`, round-robin over those services and
/// the customers, one hour apart from `first_day` days ahead.
async fn seed_bookings(db: &Client, service: &str, tag: &str, count: i32, first_day: i32) -> Result<()> {
    let inserted = db
        .execute(
            "WITH s AS (SELECT array_agg(id ORDER BY id) AS ids FROM services WHERE title = $1),
                  c AS (SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE role = 'customer')
             INSERT INTO bookings (service_id, customer_id, start_time, end_time, status, notes)
             SELECT s.ids[1 + g % cardinality(s.ids)], c.ids[1 + g % cardinality(c.ids)],
                    date_trunc('hour', now()) + make_interval(days => $4::int, hours => g),
                    date_trunc('hour', now()) + make_interval(days => $4::int, hours => g + 1),
                    'pending', $2
               FROM s, c, generate_series(0, $3::int - 1) g",
            &[&service, &tag, &count, &first_day],
        )
        .await
        .with_context(|| format!("seeding the {tag} bookings"))?;
    ensure!(inserted == count as u64, "seeded {inserted} {tag} bookings instead of {count}");
    Ok(())
}

/// Providers with a Google Meet service and a Google connection at the fake, and each phase's
/// pending bookings of those services, `(tag, count)` in phase order, after every other phase's.
pub async fn seed_google(
    db: &mut Client,
    google: &FakeGoogle,
    key: &SecretString,
    phases: &[(&'static str, u32)],
) -> Result<()> {
    let providers = db
        .query(
            "INSERT INTO users (email, full_name, role)
             SELECT format('google-provider-%s@bench.example', g), format('Bench Google provider %s', g), 'provider'
               FROM generate_series(1, $1::int) g
             RETURNING id",
            &[&GOOGLE_PROVIDERS],
        )
        .await
        .context("seeding the Google Meet providers")?;
    db.execute(
        "INSERT INTO services (provider_id, title, description, duration_minutes, is_online, meeting_platform)
         SELECT id, $1, 'Online session', 60, true, 'google_meet'
           FROM users WHERE email LIKE 'google-provider-%'",
        &[&GOOGLE_SERVICE],
    )
    .await
    .context("seeding the Google Meet services")?;
    let keyring = Keyring::new(key, &[]).context("building the keyring")?;
    let connections: Vec<_> = providers
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let (access, refresh) = google.issue();
            market::google_connection(
                row.get(0),
                &access,
                &refresh,
                2 * 3600,
                &format!("google-provider-{i}@bench.example"),
            )
        })
        .collect();
    market::store_integrations(db, &keyring, "bench", &connections).await?;
    for &(tag, n) in phases {
        let count = i32::try_from(n).with_context(|| format!("{tag} bookings"))?;
        let last_day: i32 =
            db.query_one("SELECT (max(start_time)::date - now()::date)::int FROM bookings", &[]).await?.get(0);
        seed_bookings(db, GOOGLE_SERVICE, tag, count, last_day + 2).await?;
    }
    db.batch_execute("ANALYZE").await.context("analyzing the seeded tables")?;
    Ok(())
}

/// The ids of a phase's bookings in confirmation order.
pub async fn booking_ids(db: &Client, tag: &str) -> Result<Vec<Uuid>> {
    let rows = db
        .query("SELECT id FROM bookings WHERE notes = $1 ORDER BY start_time, id", &[&tag])
        .await
        .with_context(|| format!("listing the {tag} bookings"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
