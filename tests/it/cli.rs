//! The `meetingd` binary: check, migrate, run with SIGTERM, demo.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use meetingd_testkit::cluster::admin_url;
use meetingd_testkit::db::{TestDb, eventually};
use meetingd_testkit::market;
use uuid::Uuid;

/// A valid key for the commands that need one (32 zero bytes, base64).
const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// `meetingd <args>` with a test environment: no inherited database URL, a valid key, no listeners.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("MEETINGD_LOG", "warn")
        .env("MEETINGD_ENCRYPTION__KEY", KEY)
        .env("MEETINGD_HTTP__LISTEN", "")
        .env("MEETINGD_HTTP__METRICS_LISTEN", "");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

pub fn meetingd(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = command(args, envs);
    cmd.output().expect("run meetingd")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn check_reports_a_current_schema_and_exits_zero() {
    let db = TestDb::migrated().await;
    let out = meetingd(&["check"], &[("DATABASE_URL", &db.url)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("ok   config")
            && t.contains("ok   database")
            && t.contains(&format!("schema current at V{}", meetingd::db::migrate::latest_version())),
        "{t}"
    );
}

#[tokio::test]
async fn check_says_what_the_daemons_published_for_the_sql_rules_and_whether_it_is_this_configuration() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let check = || {
        let out = meetingd(&["check"], &[("DATABASE_URL", &db.url)]);
        assert!(out.status.success(), "warnings only: {}", text(&out));
        text(&out)
    };
    let t = check();
    assert!(t.contains("warn published") && t.contains("no daemon has published the platforms yet"), "{t}");

    // What a daemon of this configuration (defaults: Jitsi alone, the fallback) publishes.
    let config = meetingd::config::Config::defaults();
    let providers = meetingd::providers::Providers::from_config(&config);
    let connectors = meetingd::providers::auth::Connectors::default();
    let offer = meetingd::providers::offer::offering(&providers, &connectors, config.fallback.platform);
    let pool = meetingd::db::pool(&db.config().database, 1).unwrap();
    meetingd::db::platforms::publish(pool.get().await.unwrap().sql(), &offer, "daemon:one").await.unwrap();
    let t = check();
    assert!(
        t.contains("ok   published")
            && t.contains("jitsi (fallback) offered, by daemon:one")
            && t.contains("as this configuration"),
        "{t}"
    );
    // Another configuration's (Zoom offered too).
    c.execute("UPDATE meetingd.platforms SET offered = true WHERE platform = 'zoom'", &[]).await.unwrap();
    let t = check();
    assert!(
        t.contains("warn published") && t.contains("this configuration offers jitsi (fallback): restart the daemons"),
        "{t}"
    );
}

#[tokio::test]
async fn check_explains_every_problem_and_exits_non_zero() {
    let db = TestDb::marketplace_only().await;
    let out = meetingd(&["check"], &[("MEETINGD_DATABASE__URL", &db.url)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("run `meetingd migrate`"), "{}", text(&out));

    let out = meetingd(
        &["check"],
        &[
            ("MEETINGD_DATABASE__URL", &db.url),
            ("MEETINGD_WORKER__CONCURRENCY", "0"),
            ("MEETINGD_WORKER__MAX_ATTEMPTS", "0"),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(t.contains("worker.concurrency") && t.contains("worker.max_attempts"), "{t}");
    assert!(t.contains("ok   database"), "checks go on past config problems: {t}");

    let out = meetingd(&["check"], &[("MEETINGD_WORKER__CONCURENCY", "3")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("concurency"), "{}", text(&out));

    let out = meetingd(&["check"], &[("MEETINGD_DATABASE__URL", "postgres://postgres@127.0.0.1:1/none")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL database"), "{}", text(&out));
}

#[tokio::test]
async fn migrate_twice_is_a_no_op_the_second_time() {
    let db = TestDb::marketplace_only().await;
    let first = meetingd(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("applied V1__meeting_integrations"), "{}", text(&first));
    let second = meetingd(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(second.status.success());
    assert!(text(&second).contains("nothing to do"), "{}", text(&second));
}

#[tokio::test]
async fn config_file_is_read_and_env_overrides_it() {
    let db = TestDb::migrated().await;
    let dir = std::env::temp_dir().join(format!("meetingd-cfg-{}", &db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("meetingd.toml");
    std::fs::write(&file, "[database]\nurl = \"postgres://postgres@127.0.0.1:1/unreachable\"\n").unwrap();
    let out = meetingd(&["--config", file.to_str().unwrap(), "check"], &[]);
    assert!(text(&out).contains("127.0.0.1:1/unreachable"), "{}", text(&out));
    let out = meetingd(&["check"], &[("MEETINGD_CONFIG", file.to_str().unwrap()), ("MEETINGD_DATABASE__URL", &db.url)]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn run_links_bookings_and_stops_cleanly_on_sigterm() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    // database.url and the encryption key are a working configuration: http.listen keeps its
    // default, and without a JWT key the API is simply not served. Started by hand, not through
    // the test kit's `DaemonCommand`, because that minimal configuration is what is tested.
    let child = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .args(["--log-format", "json", "run"])
        .env_remove("DATABASE_URL")
        .env("MEETINGD_DATABASE__URL", &db.url)
        .env("MEETINGD_ENCRYPTION__KEY", KEY)
        .env("MEETINGD_HTTP__METRICS_LISTEN", "")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = market::book(&c, m.online, m.customer, "confirmed").await;
    eventually("booking linked by the binary", Duration::from_secs(30), || async {
        (market::meeting(&c, b).await.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(log.contains("SIGTERM received") && log.contains("meetingd stopped"), "{log}");
    assert!(log.contains("\"operation\":\"meeting.create\""), "one line per meeting operation: {log}");
    assert!(log.contains("HTTP API off: no JWT key is configured"), "{log}");
}

#[tokio::test]
async fn demo_prints_a_real_jitsi_link_and_exits_zero() {
    let out = meetingd(&["demo"], &[("DATABASE_URL", admin_url())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("meeting link landed after") && t.contains("https://meet.jit.si/meetingd-"), "{t}");
    assert!(t.contains("link unchanged: yes") && t.contains("meeting status deleted"), "{t}");
    assert!(t.contains("dropped"), "{t}");
}

fn meetingd_stdin(args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut cmd = command(args, envs);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn keys_generate_prints_a_usable_key_and_run_refuses_to_start_without_one() {
    let out = meetingd(&["keys", "generate"], &[]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(meetingd::crypto::Keyring::new(&secrecy::SecretString::from(key.clone()), &[]).is_ok(), "{key}");
    let other = String::from_utf8(meetingd(&["keys", "generate"], &[]).stdout).unwrap();
    assert_ne!(key, other.trim());

    let db = TestDb::migrated().await;
    let out = meetingd(&["run"], &[("MEETINGD_DATABASE__URL", &db.url), ("MEETINGD_ENCRYPTION__KEY", "")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no encryption key"), "{}", text(&out));
    let out = meetingd(&["check"], &[("MEETINGD_DATABASE__URL", &db.url), ("MEETINGD_ENCRYPTION__KEY", "")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL encryption"), "{}", text(&out));
}

#[tokio::test]
async fn integrations_add_list_disable_and_key_rotation() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let provider = market::user(&c, "provider").await;
    let dir = std::env::temp_dir().join(format!("meetingd-tok-{}", &db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let refresh_file = dir.join("refresh");
    std::fs::write(&refresh_file, "1//0g-cli-refresh-secret\n").unwrap();
    let user = provider.to_string();
    let env = [("MEETINGD_DATABASE__URL", db.url.as_str())];

    let out = meetingd_stdin(
        &[
            "integrations",
            "add",
            "--user",
            &user,
            "--platform",
            "google_meet",
            "--access-token-file",
            "-",
            "--refresh-token-file",
            refresh_file.to_str().unwrap(),
            "--expires-at",
            "2030-01-01T00:00:00Z",
            "--email",
            "dana@example.com",
        ],
        &env,
        "ya29.cli-access-secret\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let stored: String = c.query_one("SELECT access_token FROM user_meeting_integrations", &[]).await.unwrap().get(0);
    assert!(!stored.contains("cli-access"), "stored encrypted");

    let list = meetingd(&["integrations", "list"], &env);
    let t = text(&list);
    assert!(
        t.contains(&user) && t.contains("google_meet") && t.contains("active") && t.contains("dana@example.com"),
        "{t}"
    );
    assert!(t.contains("current") && !t.contains("secret"), "{t}");

    // Rotate to a new key, keeping the old one for decryption; then the old key can go.
    let new_key = String::from_utf8(meetingd(&["keys", "generate"], &[]).stdout).unwrap().trim().to_string();
    let old_keys = format!("[\"{KEY}\"]");
    let rotate = meetingd(
        &["keys", "rotate"],
        &[env[0], ("MEETINGD_ENCRYPTION__KEY", &new_key), ("MEETINGD_ENCRYPTION__OLD_KEYS", &old_keys)],
    );
    assert!(rotate.status.success(), "{}", text(&rotate));
    assert!(text(&rotate).contains("re-encrypted 1 integration"), "{}", text(&rotate));
    let list = meetingd(&["integrations", "list"], &[env[0], ("MEETINGD_ENCRYPTION__KEY", &new_key)]);
    assert!(text(&list).contains("current"), "{}", text(&list));
    let again = meetingd(&["keys", "rotate"], &[env[0], ("MEETINGD_ENCRYPTION__KEY", &new_key)]);
    assert!(
        text(&again).contains("re-encrypted 0 integration(s)") && text(&again).contains("1 already current"),
        "{}",
        text(&again)
    );
    let keyring = meetingd::crypto::Keyring::new(&secrecy::SecretString::from(new_key.clone()), &[]).unwrap();
    let row: (Uuid, String, Uuid, String) = {
        let r = c
            .query_one("SELECT id, refresh_token, user_id, platform FROM user_meeting_integrations", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    let owner = meetingd::crypto::Owner { user_id: row.2, platform: &row.3 };
    let refresh = keyring.decrypt(&row.1, row.0, meetingd::crypto::Column::RefreshToken(owner)).unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&refresh), "1//0g-cli-refresh-secret");

    let out = meetingd(
        &["integrations", "disable", "--user", &user, "--platform", "google_meet"],
        &[env[0], ("MEETINGD_ENCRYPTION__KEY", &new_key)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let r =
        c.query_one("SELECT is_active, access_token, refresh_token FROM user_meeting_integrations", &[]).await.unwrap();
    assert!(!r.get::<_, bool>(0));
    assert_eq!((r.get::<_, String>(1), r.get::<_, Option<String>>(2)), (String::new(), None), "tokens wiped");
    assert!(text(&meetingd(&["integrations", "list"], &env)).contains("needs_reconnect"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn status_show_and_retry_tell_an_admin_what_happened() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let m = market::seed(&c).await;
    let zoom = market::service(&c, m.provider, true, Some("zoom")).await;
    let b = market::book(&c, zoom, m.customer, "confirmed").await;
    let mut config = db.config();
    config.fallback.platform = meetingd::config::Fallback::None;
    let pool = meetingd::db::pool(&config.database, 2).unwrap();
    let worker = meetingd::worker::Worker::new(
        pool,
        meetingd::providers::Providers::from_config(&config),
        config.worker.clone(),
        config.fallback.platform,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        Uuid::new_v4(),
    );
    worker.run_once().await.unwrap();
    let env = [("MEETINGD_DATABASE__URL", db.url.as_str())];

    let status = text(&meetingd(&["status"], &env));
    assert!(
        status.contains("1 failed") && status.contains(&b.to_string()) && status.contains("has not connected Zoom"),
        "{status}"
    );
    let show = meetingd(&["bookings", "show", &b.to_string()], &env);
    let t = text(&show);
    assert!(show.status.success(), "{t}");
    assert!(t.contains("meeting   status failed") && t.contains("meeting.create") && t.contains("failed"), "{t}");
    assert!(t.contains("job       failed"), "{t}");

    let retry = text(&meetingd(&["bookings", "retry", "--all-failed"], &env));
    assert!(retry.contains("queued 1 failed booking"), "{retry}");
    assert_eq!(market::job(&c, b).await.unwrap().state, "pending");
    let one = meetingd(&["bookings", "retry", &b.to_string()], &env);
    assert!(one.status.success(), "{}", text(&one));
    let missing = meetingd(&["bookings", "show", &Uuid::new_v4().to_string()], &env);
    assert_eq!(missing.status.code(), Some(1));
    let bad = meetingd(&["bookings", "show", "not-a-uuid"], &env);
    assert_eq!(bad.status.code(), Some(2), "clap rejects a bad id");
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let bash = String::from_utf8(meetingd(&["completions", "bash"], &[]).stdout).unwrap();
    assert!(bash.contains("_meetingd") && bash.contains("integrations"), "{bash}");
    let man = String::from_utf8(meetingd(&["man"], &[]).stdout).unwrap();
    assert!(man.starts_with(".ie") || man.contains(".TH meetingd"), "{}", &man[..200.min(man.len())]);
    assert!(man.contains("migrate") && man.contains("bookings"));
}
