//! Token envelopes bound to their owner: a row moved to another user or platform keeps no working
//! token, and rows written in the old envelope format are upgraded (rows and retired copies) and
//! keep working, after which the old format is refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use meetingd::admin::{self, Rotation};
use meetingd::config::Config;
use meetingd::crypto::{Column, Keyring, Owner};
use meetingd::providers::Platform;
use meetingd_testkit::market::{self, meeting};
use secrecy::ExposeSecret;
use sha2::Digest;
use uuid::Uuid;

use crate::google::{G, setup_with};

/// An envelope as meetingd wrote it before tokens were bound to their owner: version 1, AAD =
/// integration id ‖ ':' ‖ column, under `config`'s current key.
fn seal_old_format(config: &Config, plaintext: &str, row: Uuid, column: &str) -> String {
    let key = STANDARD.decode(config.encryption.key.expose_secret()).unwrap();
    let cipher = XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut aad = row.as_bytes().to_vec();
    aad.push(b':');
    aad.extend_from_slice(column.as_bytes());
    let sealed = cipher.encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &aad }).unwrap();
    let mut envelope = vec![1u8];
    envelope.extend_from_slice(&sha2::Sha256::digest(&key)[..4]);
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&sealed);
    STANDARD.encode(envelope)
}

async fn book(g: &G, service: Uuid, customer: Uuid) -> Uuid {
    market::book(&g.c, service, customer, "confirmed").await
}

/// The audit detail of the booking's Google attempt.
async fn google_detail(g: &G, booking: Uuid) -> String {
    g.c.query_one(
        "SELECT detail FROM meetingd.audit_log WHERE booking_id = $1 AND platform = 'google_meet'",
        &[&booking],
    )
    .await
    .unwrap()
    .get(0)
}

async fn upgrade(config: &Config) -> Rotation {
    let mut session = meetingd::db::session(&config.database).await.unwrap();
    admin::upgrade_envelopes(&mut session, &config.encryption.keyring().unwrap()).await.unwrap()
}

#[tokio::test]
async fn an_integration_row_moved_to_another_user_keeps_no_working_token() {
    let g = setup_with(3600, |_| {}).await;
    let other = market::user(&g.c, "provider").await;
    let service = market::service(&g.c, other, true, Some("google_meet")).await;
    // The provider's row, tokens and all, now names another user.
    g.c.execute("UPDATE user_meeting_integrations SET user_id = $1 WHERE user_id = $2", &[&other, &g.m.provider])
        .await
        .unwrap();
    falls_back_without_sending_the_token(&g, service, "the moved token").await;
}

#[tokio::test]
async fn tokens_sealed_for_another_platform_do_not_work_on_this_one() {
    let g = setup_with(3600, |_| {}).await;
    let other = market::user(&g.c, "provider").await;
    let service = market::service(&g.c, other, true, Some("google_meet")).await;
    // `other` has a Zoom row holding (valid) tokens; relabelled as Google Meet, they must not work.
    let mut zoom = market::google_connection(other, &g.access, &g.refresh, 3600, "z@example.com");
    zoom.platform = Platform::Zoom;
    let mut client = meetingd_testkit::db::connect(g.config.database.url.expose_secret()).await;
    market::store_integrations(&mut client, &g.config.encryption.keyring().unwrap(), "test", &[zoom]).await.unwrap();
    g.c.execute("UPDATE user_meeting_integrations SET platform = 'google_meet' WHERE user_id = $1", &[&other])
        .await
        .unwrap();
    falls_back_without_sending_the_token(&g, service, "the relabelled token").await;
}

/// A booking of `service` falls back to Jitsi with the decrypt failure recorded, and `what` (a
/// token that must not open) never reached Google.
async fn falls_back_without_sending_the_token(g: &G, service: Uuid, what: &str) {
    let b = book(g, service, g.m.customer).await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, b).await;
    assert_eq!(state.platform.as_deref(), Some("jitsi"), "falls back: {state:?}");
    assert!(google_detail(g, b).await.contains("does not decrypt"), "{}", google_detail(g, b).await);
    assert!(g.google.calls().iter().all(|c| !c.starts_with("insert")), "{what} was never sent to Google");
}

#[tokio::test]
async fn old_format_rows_and_retired_copies_are_upgraded_keep_working_and_the_old_format_is_then_refused() {
    let g = setup_with(3600, |_| {}).await;
    let keyring = g.config.encryption.keyring().unwrap();
    let (row, user): (Uuid, Uuid) = {
        let r = g.c.query_one("SELECT id, user_id FROM user_meeting_integrations", &[]).await.unwrap();
        (r.get(0), r.get(1))
    };
    // What an earlier meetingd left: the row and a retired copy of another integration id.
    let access = seal_old_format(&g.config, &g.access, row, "access_token");
    let refresh = seal_old_format(&g.config, &g.refresh, row, "refresh_token");
    g.c.execute("UPDATE user_meeting_integrations SET access_token = $1, refresh_token = $2", &[&access, &refresh])
        .await
        .unwrap();
    let retired_id = Uuid::new_v4();
    let (old_access, old_refresh) = (
        seal_old_format(&g.config, "ya29.retired", retired_id, "access_token"),
        seal_old_format(&g.config, "1//retired", retired_id, "refresh_token"),
    );
    g.c.execute(
        "INSERT INTO meetingd.retired_integrations (integration_id, user_id, platform, access_token, refresh_token, reason)
         VALUES ($1, $2, 'google_meet', $3, $4, 'deleted')",
        &[&retired_id, &user, &old_access, &old_refresh],
    )
    .await
    .unwrap();

    // Before the upgrade, the token path refuses the old format (it never opens one).
    let before = book(&g, g.service, g.m.customer).await;
    g.worker.run_once().await.unwrap();
    assert_eq!(meeting(&g.c, before).await.platform.as_deref(), Some("jitsi"));
    assert!(google_detail(&g, before).await.contains("old-format"), "{}", google_detail(&g, before).await);

    // What the daemon runs at start-up (and `meetingd migrate`): both are re-encrypted.
    admin::upgrade_envelopes_at_start(&g.config.database, &keyring).await.unwrap();
    let stored = g.c.query_one("SELECT access_token, refresh_token FROM user_meeting_integrations", &[]).await.unwrap();
    let (access, refresh): (String, String) = (stored.get(0), stored.get(1));
    let owner = Owner { user_id: user, platform: "google_meet" };
    assert!(keyring.is_current(&access) && keyring.is_current(&refresh));
    assert_eq!(keyring.decrypt(&refresh, row, Column::RefreshToken(owner)).unwrap().expose_secret(), g.refresh);
    let copy =
        g.c.query_one("SELECT access_token, refresh_token FROM meetingd.retired_integrations", &[]).await.unwrap();
    let (copy_access, copy_refresh): (String, String) = (copy.get(0), copy.get(1));
    assert_eq!(
        keyring.decrypt(&copy_access, retired_id, Column::AccessToken(owner)).unwrap().expose_secret(),
        "ya29.retired"
    );
    assert_eq!(
        keyring.decrypt(&copy_refresh, retired_id, Column::RefreshToken(owner)).unwrap().expose_secret(),
        "1//retired"
    );
    let refused: bool =
        g.c.query_one("SELECT legacy_refused_at IS NOT NULL FROM meetingd.token_format", &[]).await.unwrap().get(0);
    assert!(refused, "no old-format envelope left: the old format is refused from now on");

    // The upgraded row works.
    let after = book(&g, g.service, g.m.customer).await;
    g.worker.run_once().await.unwrap();
    let state = meeting(&g.c, after).await;
    assert_eq!((state.platform.as_deref(), state.status.as_deref()), (Some("google_meet"), Some("ready")), "{state:?}");

    // A second pass has nothing to do; an old-format envelope planted now is refused by it too.
    assert_eq!(upgrade(&g.config).await, Rotation { legacy_refused: true, ..Rotation::default() });
    let planted = seal_old_format(&g.config, &g.access, row, "access_token");
    g.c.execute("UPDATE user_meeting_integrations SET access_token = $1", &[&planted]).await.unwrap();
    let mut session = meetingd::db::session(&g.config.database).await.unwrap();
    let rotation = admin::rotate_keys(&mut session, &keyring, 10).await.unwrap();
    assert_eq!(rotation.rotated, 0, "{rotation:?}");
    assert!(rotation.failed.iter().any(|(id, why)| *id == row && why.contains("old-format")), "{rotation:?}");
    let stored: String = g.c.query_one("SELECT access_token FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert_eq!(stored, planted, "left as it is, and refused");
}

#[tokio::test]
async fn the_old_format_stays_readable_while_its_key_is_missing_and_passes_may_run_at_once() {
    let g = setup_with(3600, |_| {}).await;
    downgrade_to_old_format(&g).await;

    // Under a keyring without that key the row cannot be upgraded: the old format stays open.
    let mut without = g.config.clone();
    without.encryption.key = Keyring::generate_key();
    let report = upgrade(&without).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(!report.legacy_refused, "{report:?}");

    // With the key, two daemons starting at once upgrade the row once between them.
    let (a, b) = tokio::join!(upgrade(&g.config), upgrade(&g.config));
    assert_eq!(a.upgraded + b.upgraded, 1, "{a:?} {b:?}");
    assert!(a.failed.is_empty() && b.failed.is_empty() && a.legacy_refused && b.legacy_refused, "{a:?} {b:?}");
    let b = book(&g, g.service, g.m.customer).await;
    g.worker.run_once().await.unwrap();
    assert_eq!(meeting(&g.c, b).await.status.as_deref(), Some("ready"));
}

/// Overwrites the provider's stored tokens with old-format envelopes of the same plaintext.
async fn downgrade_to_old_format(g: &G) -> Uuid {
    let row: Uuid = g.c.query_one("SELECT id FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    let access = seal_old_format(&g.config, &g.access, row, "access_token");
    let refresh = seal_old_format(&g.config, &g.refresh, row, "refresh_token");
    g.c.execute("UPDATE user_meeting_integrations SET access_token = $1, refresh_token = $2", &[&access, &refresh])
        .await
        .unwrap();
    row
}

#[tokio::test]
async fn a_daemon_started_over_old_format_rows_upgrades_them_and_links_with_them() {
    let g = setup_with(3600, |_| {}).await;
    downgrade_to_old_format(&g).await;
    let b = book(&g, g.service, g.m.customer).await;
    let pool = meetingd::db::pool(&g.config.database, 4).unwrap();
    let deps = meetingd::providers::ProviderDeps {
        pool,
        keyring: std::sync::Arc::new(g.config.encryption.keyring().unwrap()),
        actor: "daemon:test".into(),
    };
    let providers = meetingd::providers::Providers::real(&g.config, &deps).unwrap();
    let daemon = meetingd_testkit::daemon::InProcess::start(g.config.clone(), providers);
    let state = meetingd_testkit::db::eventually("linked", std::time::Duration::from_secs(20), || async {
        let state = meeting(&g.c, b).await;
        state.status.as_deref().is_some_and(|s| s != "pending").then_some(state)
    })
    .await;
    assert_eq!((state.platform.as_deref(), state.status.as_deref()), (Some("google_meet"), Some("ready")), "{state:?}");
    let stored: String = g.c.query_one("SELECT access_token FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert!(!Keyring::is_legacy(&stored), "re-encrypted at start-up");
    daemon.stop(std::time::Duration::from_secs(20)).await;
}

#[tokio::test]
async fn meetingd_migrate_upgrades_old_format_rows() {
    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="; // the CLI tests' key
    let g = setup_with(3600, |c| c.encryption.key = secrecy::SecretString::from(KEY)).await;
    downgrade_to_old_format(&g).await;
    let out = crate::cli::meetingd(&["migrate"], &[("DATABASE_URL", g._db.url.as_str())]);
    let t = crate::cli::text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("1 integration(s) re-encrypted from the old token envelope format"), "{t}");
    assert!(t.contains("old-format envelopes are refused"), "{t}");
    let stored: String =
        g.c.query_one("SELECT refresh_token FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert!(g.config.encryption.keyring().unwrap().is_current(&stored));
}

#[tokio::test]
async fn a_row_of_nobody_does_not_stop_the_upgrade() {
    let g = setup_with(3600, |_| {}).await;
    let orphan = Uuid::new_v4();
    let access = seal_old_format(&g.config, "ya29.nobody", orphan, "access_token");
    g.c.execute(
        "INSERT INTO user_meeting_integrations (id, user_id, platform, access_token) VALUES ($1, NULL, 'google_meet', $2)",
        &[&orphan, &access],
    )
    .await
    .unwrap();
    let report = upgrade(&g.config).await;
    assert_eq!((report.upgraded, report.failed.len(), report.legacy_refused), (1, 0, true), "{report:?}");
}
