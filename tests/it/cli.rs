//! The `meetingd` binary: check, migrate, run with SIGTERM, demo.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::cluster::admin_url;
use crate::helpers::db::{TestDb, eventually};
use crate::helpers::market;

/// A valid key for the commands that need one (32 zero bytes, base64).
const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn meetingd(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meetingd"));
    cmd.args(args).env_remove("DATABASE_URL").env("MEETINGD_LOG", "warn").env("MEETINGD_ENCRYPTION__KEY", KEY);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run meetingd")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn check_reports_a_current_schema_and_exits_zero() {
    let db = TestDb::migrated().await;
    let out = meetingd(&["check"], &[("DATABASE_URL", &db.url)]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ok   config") && t.contains("ok   database") && t.contains("schema current at V2"), "{t}");
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
    let child = Command::new(env!("CARGO_BIN_EXE_meetingd"))
        .args(["--log-format", "json", "run"])
        .env("MEETINGD_DATABASE__URL", &db.url)
        .env("MEETINGD_ENCRYPTION__KEY", KEY)
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
