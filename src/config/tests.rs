//! The configuration's own tests: layering, unknown keys, validation, credentials, redaction.

// figment's Jail closures return figment::Error
#![allow(clippy::result_large_err)]

use super::*;
use figment::Jail;

#[test]
fn defaults_are_valid() {
    let c = Config::defaults();
    assert_eq!(c.worker.concurrency, 32);
    assert_eq!(c.fallback.platform, Fallback::Platform(Platform::Jitsi));
    assert_eq!(c.jitsi.base_url.as_str(), "https://meet.jit.si/");
}

#[test]
fn env_overrides_file_and_database_url() {
    Jail::expect_with(|jail| {
        jail.create_file("m.toml", "[worker]\nconcurrency = 3\nlisten = false\n")?;
        jail.set_env("DATABASE_URL", "postgres://a@h/db1");
        jail.set_env("MEETINGD_WORKER__CONCURRENCY", "7");
        jail.set_env("MEETINGD_LOG", "debug");
        let c = Config::load(Some(Path::new("m.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.worker.concurrency, 7);
        assert!(!c.worker.listen);
        assert_eq!(c.database.url.expose_secret(), "postgres://a@h/db1");
        jail.set_env("MEETINGD_DATABASE__URL", "postgres://b@h/db2");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.database.url.expose_secret(), "postgres://b@h/db2");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors() {
    Jail::expect_with(|jail| {
        jail.create_file("m.toml", "[worker]\nconcurency = 3\n")?;
        let err = Config::load(Some(Path::new("m.toml"))).unwrap_err().to_string();
        assert!(err.contains("concurency"), "{err}");
        jail.create_file("m2.toml", "")?;
        jail.set_env("MEETINGD_WORKR__CONCURRENCY", "3");
        let err = Config::load(Some(Path::new("m2.toml"))).unwrap_err().to_string();
        assert!(err.contains("workr"), "{err}");
        Ok(())
    });
}

#[test]
fn all_problems_reported_together() {
    Jail::expect_with(|jail| {
        jail.set_env("MEETINGD_WORKER__CONCURRENCY", "0");
        jail.set_env("MEETINGD_WORKER__MAX_ATTEMPTS", "0");
        jail.set_env("MEETINGD_JITSI__BASE_URL", "ftp://x");
        let ConfigError::Invalid(problems) = Config::load(None).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(problems.len(), 3, "{problems:?}");
        Ok(())
    });
}

#[test]
fn jitsi_rooms_need_an_https_base() {
    Jail::expect_with(|jail| {
        jail.set_env("MEETINGD_JITSI__BASE_URL", "http://meet.example.org");
        let ConfigError::Invalid(problems) = Config::load(None).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("jitsi.base_url must be an https URL"), "{problems:?}");
        Ok(())
    });
}

#[test]
fn fallback_accepts_only_accountless_platforms() {
    Jail::expect_with(|jail| {
        jail.set_env("MEETINGD_FALLBACK__PLATFORM", "none");
        assert_eq!(Config::load(None).unwrap().fallback.platform, Fallback::None);
        jail.set_env("MEETINGD_FALLBACK__PLATFORM", "zoom");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("cannot need an account"), "{err}");
        Ok(())
    });
}

#[test]
fn systemd_credentials_fill_unset_secrets() {
    Jail::expect_with(|jail| {
        let key = crate::crypto::Keyring::generate_key();
        jail.create_dir("creds")?;
        jail.create_file("creds/encryption-key", key.expose_secret())?;
        jail.create_file("creds/jwt-secret", "s3cret-of-the-app-at-least-32-bytes")?;
        jail.create_file("creds/database-url", "postgres://m:pw@db/market\n")?;
        jail.create_file("own-google-secret", "mine")?;
        jail.set_env("MEETINGD_GOOGLE__CLIENT_SECRET_FILE", "own-google-secret");
        jail.set_env("CREDENTIALS_DIRECTORY", jail.directory().join("creds").display().to_string());
        jail.create_file("creds/google-client-secret", "theirs")?;
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert!(c.encryption.keyring().is_ok());
        assert_eq!(c.http.jwt_secret().unwrap().unwrap().expose_secret(), "s3cret-of-the-app-at-least-32-bytes");
        assert_eq!(c.database.url.expose_secret(), "postgres://m:pw@db/market");
        assert_eq!(c.google.client_secret().unwrap().unwrap().expose_secret(), "mine", "explicit settings win");
        Ok(())
    });
}

#[test]
fn database_url_is_redacted_in_debug() {
    Jail::expect_with(|jail| {
        jail.set_env("DATABASE_URL", "postgres://u:hunter2@h/db");
        let c = Config::load(None).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
        assert_eq!(redact_url("host=h password=hunter2 user=u"), "host=h password=*** user=u");
        Ok(())
    });
}

#[test]
fn zoom_counts_its_daily_meeting_writes_and_only_zoom_does() {
    let c = Config::defaults();
    assert_eq!(c.limits.zoom.daily_meeting_writes, 100);
    assert_eq!(c.limits.google_meet.daily_meeting_writes, 0);
    Jail::expect_with(|jail| {
        jail.set_env("MEETINGD_LIMITS__ZOOM__DAILY_MEETING_WRITES", "0");
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.limits.zoom.daily_meeting_writes, 0, "0: not counted");
        jail.set_env("MEETINGD_LIMITS__GOOGLE_MEET__DAILY_MEETING_WRITES", "5");
        let ConfigError::Invalid(problems) = Config::load(None).unwrap_err() else { panic!("expected Invalid") };
        assert!(problems.iter().any(|p| p.contains("limits.google_meet.daily_meeting_writes")), "{problems:?}");
        Ok(())
    });
}

#[test]
fn the_monitor_and_googles_publishing_status_are_checked() {
    let mut c = Config::defaults();
    assert!(c.monitor.enabled && !c.google.testing());
    assert_eq!((c.monitor.interval_secs, c.monitor.check_every_hours), (3600, 12));
    c.google.publishing_status = "Testing".into();
    c.monitor.refresh_warning_days = 90;
    c.monitor.interval_secs = 0;
    let problems = c.problems().join("\n");
    assert!(problems.contains("google.publishing_status"), "{problems}");
    assert!(problems.contains("monitor.refresh_warning_days"), "{problems}");
    assert!(problems.contains("monitor.interval_secs"), "{problems}");
    c.google.publishing_status = "testing".into();
    assert!(c.google.testing());
}
