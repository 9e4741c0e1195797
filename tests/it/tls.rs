//! TLS to PostgreSQL: every `sslmode`, through the pool, one-off connections, `meetingd check` and
//! the whole daemon, against a server with TLS on (the throwaway cluster always has it).

use std::path::PathBuf;
use std::time::Duration;

use meetingd::config::Config;
use meetingd::providers::Providers;
use meetingd_testkit::certs::Ca;
use meetingd_testkit::cluster::{self, ServerTls, admin_url};
use meetingd_testkit::db::{TestDb, connect, eventually};
use meetingd_testkit::market::{self, count};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Whether the server offers TLS at all; `false` (said on stderr) only for a `DATABASE_URL`
/// server without it: the throwaway cluster always has it.
async fn server_has_tls() -> bool {
    let on: String = connect(admin_url()).await.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    if on != "on" {
        assert!(cluster::external(), "the throwaway cluster runs with ssl = on");
        eprintln!("skipped: the DATABASE_URL server has ssl = off");
    }
    on == "on"
}

/// The server's certificate details, or `None` (said on stderr) when the tests do not know them.
async fn server_tls() -> Option<ServerTls> {
    if !server_has_tls().await {
        return None;
    }
    let tls = cluster::tls();
    if tls.is_none() {
        eprintln!("skipped: set DATABASE_URL_SSLROOTCERT (and DATABASE_URL_SSLHOST) for the DATABASE_URL server");
    }
    tls
}

/// The test database's URL with another host (None: the same) and these query parameters.
fn url(db: &TestDb, host: Option<&str>, query: &str) -> String {
    let mut u = url::Url::parse(&db.url).unwrap();
    if let Some(host) = host {
        u.set_host(Some(host)).unwrap();
    }
    u.set_query((!query.is_empty()).then_some(query));
    u.to_string()
}

fn with_url(db: &TestDb, url: String) -> Config {
    let mut c = db.config();
    c.database.url = SecretString::from(url);
    c
}

/// A CA the server's certificate has nothing to do with, in a file that lives as long as the guard.
struct OtherCa {
    path: PathBuf,
}

impl OtherCa {
    fn new() -> OtherCa {
        let path = std::env::temp_dir().join(format!("meetingd-other-ca-{}.crt", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, Ca::new("some other CA").cert_pem()).unwrap();
        OtherCa { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for OtherCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a one-off connection with `config` is encrypted, or why it could not connect.
async fn one_off(config: &Config) -> Result<bool, String> {
    let client = meetingd::db::connect(&config.database).await.map_err(|e| e.to_string())?;
    Ok(meetingd::db::status::session_encrypted(meetingd::db::Sql::new(&client, meetingd::db::Mode::DIRECT))
        .await
        .unwrap())
}

fn expect_certificate_error(result: Result<bool, String>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: connected, but it must not"),
        Err(e) => assert!(e.contains("certificate"), "{what}: the error names the certificate: {e}"),
    }
}

#[tokio::test]
async fn require_encrypts_pooled_and_one_off_connections() {
    if !server_has_tls().await {
        return;
    }
    let db = TestDb::migrated().await;
    let config = with_url(&db, url(&db, None, "sslmode=require"));
    let pool = meetingd::db::pool(&config.database, 2).unwrap();
    let pooled = pool.get().await.expect("a pooled connection with sslmode=require");
    assert!(meetingd::db::status::session_encrypted(pooled.sql()).await.unwrap(), "pooled session encrypted");
    assert_eq!(one_off(&config).await, Ok(true), "one-off session encrypted");
}

#[tokio::test]
async fn disable_is_plain_and_prefer_or_no_sslmode_encrypts() {
    if !server_has_tls().await {
        return;
    }
    let db = TestDb::empty().await;
    assert_eq!(one_off(&with_url(&db, url(&db, None, "sslmode=disable"))).await, Ok(false));
    assert_eq!(one_off(&with_url(&db, url(&db, None, "sslmode=prefer"))).await, Ok(true));
    // libpq's default is prefer, and so is meetingd's.
    assert_eq!(one_off(&with_url(&db, url(&db, None, ""))).await, Ok(true));
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} sslmode=disable",
        url::Url::parse(&db.url).unwrap().port().unwrap(),
        db.name
    );
    if !cluster::external() {
        assert_eq!(one_off(&with_url(&db, kv)).await, Ok(false), "key=value form");
    }
}

#[tokio::test]
async fn verify_full_checks_the_chain_and_the_host_name() {
    let Some(server) = server_tls().await else { return };
    let db = TestDb::empty().await;
    let ca = server.ca.to_str().unwrap();
    let host = Some(server.host.as_str());

    let good = with_url(&db, url(&db, host, &format!("sslmode=verify-full&sslrootcert={ca}")));
    assert_eq!(one_off(&good).await, Ok(true), "verify-full with the server's CA");

    let other = OtherCa::new();
    let wrong = with_url(&db, url(&db, host, &format!("sslmode=verify-full&sslrootcert={}", other.path())));
    expect_certificate_error(one_off(&wrong).await, "verify-full with another CA");

    // database.sslrootcert applies when the URL names none; the URL's wins.
    let mut from_config = with_url(&db, url(&db, host, "sslmode=verify-full"));
    from_config.database.sslrootcert = ca.to_string();
    assert_eq!(one_off(&from_config).await, Ok(true), "database.sslrootcert");
    from_config.database.url =
        SecretString::from(url(&db, host, &format!("sslmode=verify-full&sslrootcert={}", other.path())));
    expect_certificate_error(one_off(&from_config).await, "the URL's sslrootcert over database.sslrootcert");

    if !cluster::external() {
        // The throwaway cluster's certificate names localhost only.
        let by_ip =
            |mode: &str| with_url(&db, url(&db, Some("127.0.0.1"), &format!("sslmode={mode}&sslrootcert={ca}")));
        expect_certificate_error(
            one_off(&by_ip("verify-full")).await,
            "verify-full to an address the certificate does not name",
        );
        assert_eq!(one_off(&by_ip("verify-ca")).await, Ok(true), "verify-ca ignores the name");
        let other_ip =
            with_url(&db, url(&db, Some("127.0.0.1"), &format!("sslmode=verify-ca&sslrootcert={}", other.path())));
        expect_certificate_error(one_off(&other_ip).await, "verify-ca with another CA");
    }
}

#[tokio::test]
async fn require_with_a_root_certificate_checks_the_chain_as_libpq_does() {
    let Some(server) = server_tls().await else { return };
    let db = TestDb::empty().await;
    let other = OtherCa::new();
    let wrong = with_url(&db, url(&db, None, &format!("sslmode=require&sslrootcert={}", other.path())));
    expect_certificate_error(one_off(&wrong).await, "require with another CA");
    let right = with_url(&db, url(&db, None, &format!("sslmode=require&sslrootcert={}", server.ca.display())));
    assert_eq!(one_off(&right).await, Ok(true), "require with the server's CA, any host name");
}

#[tokio::test]
async fn check_names_the_tls_mode() {
    let Some(server) = server_tls().await else { return };
    let db = TestDb::migrated().await;
    let verified = url(&db, Some(&server.host), &format!("sslmode=verify-full&sslrootcert={}", server.ca.display()));
    let out = crate::cli::meetingd(&["check"], &[("DATABASE_URL", &verified)]);
    let t = crate::cli::text(&out);
    assert!(out.status.success() && t.contains("ok   database") && t.contains("(TLS verify-full)"), "{t}");

    let out = crate::cli::meetingd(&["check"], &[("DATABASE_URL", &url(&db, None, "sslmode=disable"))]);
    let t = crate::cli::text(&out);
    assert!(out.status.success() && t.contains("(no TLS)"), "{t}");

    let other = OtherCa::new();
    let wrong = url(&db, Some(&server.host), &format!("sslmode=verify-full&sslrootcert={}", other.path()));
    let out = crate::cli::meetingd(&["check"], &[("DATABASE_URL", &wrong)]);
    let t = crate::cli::text(&out);
    assert!(out.status.code() == Some(1) && t.contains("FAIL database") && t.contains("certificate"), "{t}");
}

#[tokio::test]
async fn the_daemon_links_bookings_over_verify_full() {
    let Some(server) = server_tls().await else { return };
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let early = market::book(&c, m.online, m.customer, "confirmed").await;

    let mut config = with_url(
        &db,
        url(&db, Some(&server.host), &format!("sslmode=verify-full&sslrootcert={}", server.ca.display())),
    );
    config.worker.sweep_interval_ms = 600_000; // only the start-up scan and NOTIFY find bookings
    let shutdown = CancellationToken::new();
    let options = meetingd::RunOptions {
        providers: Some(Box::new({
            let config = config.clone();
            move |_| Ok(Providers::from_config(&config))
        })),
        ..Default::default()
    };
    let daemon = tokio::spawn(meetingd::run_with(config, options, shutdown.clone()));
    let ready = |n: i64| {
        let c = &c;
        async move { (count(c, "SELECT count(*) FROM bookings WHERE meeting_status = 'ready'").await == n).then_some(()) }
    };
    eventually("the booking confirmed before start linked", WAIT, || ready(1)).await;
    // Found by the start-up scan: this one only a NOTIFY on the LISTEN connection can announce.
    let late = market::book(&c, m.online, m.customer, "pending").await;
    market::set_status(&c, late, "confirmed").await;
    eventually("the booking confirmed while running linked", WAIT, || ready(2)).await;
    assert!(market::meeting(&c, early).await.link.is_some() && market::meeting(&c, late).await.link.is_some());

    // Every session the daemon holds on its database — pool and LISTEN — is encrypted.
    let (sessions, encrypted): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                   FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.datname = current_database() AND a.application_name = 'meetingd'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(sessions >= 2 && encrypted == sessions, "{encrypted} of {sessions} daemon sessions encrypted");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), daemon).await.expect("daemon stops in time").unwrap().unwrap();
}

#[tokio::test]
async fn a_refused_certificate_stops_the_daemon_at_once() {
    let Some(server) = server_tls().await else { return };
    let db = TestDb::migrated().await;
    let other = OtherCa::new();
    let config =
        with_url(&db, url(&db, Some(&server.host), &format!("sslmode=verify-full&sslrootcert={}", other.path())));
    assert!(config.database.startup_wait_secs >= 10, "the default start-up wait would hide a retry loop");
    let options =
        meetingd::RunOptions { providers: Some(Box::new(|_| Ok(Providers::default()))), ..Default::default() };
    let result =
        tokio::time::timeout(Duration::from_secs(5), meetingd::run_with(config, options, CancellationToken::new()))
            .await
            .expect("a certificate error is not waited out like an unreachable server");
    let e = result.expect_err("the daemon does not start");
    assert!(format!("{e:#}").contains("certificate"), "{e:#}");
}
