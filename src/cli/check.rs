//! `meetingd check`: one line per check (configuration, database, schema, what the daemons
//! published for the SQL rules of a service's platform, marketplace columns, platforms, the API's
//! bearer tokens, webhooks, leases and transports) and every problem found.
//!
//! It reads and connects, and changes nothing.

use std::path::PathBuf;

use secrecy::ExposeSecret;

use crate::config::{Config, redact_url};
use crate::providers::Platform;

/// Prints one line per check and every problem found; `true` when there is none.
pub async fn check(file: Option<PathBuf>) -> bool {
    let mut ok = true;
    let mut report = |good: bool, what: &str, detail: String| {
        ok &= good;
        println!("{} {what:<14} {detail}", if good { "ok  " } else { "FAIL" });
    };
    let source = file.as_ref().map_or("built-in defaults and environment".to_string(), |p| p.display().to_string());
    let config: Config = match Config::figment(file.as_deref()).extract() {
        Ok(config) => config,
        Err(e) => {
            for error in e {
                report(false, "config", error.to_string());
            }
            return ok;
        }
    };
    let problems = config.problems();
    if problems.is_empty() {
        report(true, "config", format!("valid ({source})"));
    }
    for problem in problems {
        report(false, "config", problem);
    }
    report_traps(&config, &mut report);
    match config.encryption.keyring() {
        Ok(keyring) => report(
            true,
            "encryption",
            format!(
                "key {} (+{} old key(s) for decryption)",
                keyring.current_key_id(),
                config.encryption.old_keys.len()
            ),
        ),
        Err(e) => report(false, "encryption", e),
    }
    // Platforms that need an account are on when their OAuth client is configured.
    let connectors = crate::providers::auth::Connectors::from_config(&config).unwrap_or_default();
    let accounts: String = Platform::ALL
        .into_iter()
        .filter_map(crate::providers::auth::spec)
        .map(|s| match connectors.get(s.platform) {
            Some(_) => format!(", {}", s.platform),
            None => format!(" ({} not configured)", s.platform),
        })
        .collect();
    report(
        true,
        "platforms",
        format!(
            "jitsi{accounts}; fallback {}",
            match config.fallback.platform {
                crate::config::Fallback::Platform(p) => p.as_str(),
                crate::config::Fallback::None => "none",
            }
        ),
    );
    if config.http.listen.is_empty() {
        report(true, "http", "API disabled (http.listen = \"\")".into());
    } else {
        match crate::http::auth::JwtVerifier::from_config(&config.http) {
            Ok(Some(verifier)) => {
                report(true, "http", format!("API on {} ({})", config.http.listen, verifier.describe()));
                warn_bearer_tokens(&config);
                match verifier.probe().await {
                    Some(Ok(keys)) => report(true, "jwks", format!("{keys} signing key(s) meetingd can use")),
                    Some(Err(e)) => report(false, "jwks", e),
                    None => {}
                }
            }
            Ok(None) => report(
                true,
                "http",
                "API off: no JWT key (set http.jwt_secret(_file), http.jwt_public_key_file or http.jwt_jwks_url to serve it on http.listen); meetings are still linked".into(),
            ),
            Err(e) => report(false, "http", e),
        }
    }
    let w = &config.webhooks;
    if w.is_on() {
        let secret = match w.secret() {
            Ok(Some(_)) => "whsec_***",
            _ => "missing",
        };
        report(
            true,
            "webhooks",
            format!(
                "every event POSTed to {} (Standard Webhooks, secret {secret}); dead-lettered {} s after the event",
                w.shown_url(),
                w.max_age_secs
            ),
        );
    } else {
        report(true, "webhooks", "off (webhooks.url is empty)".into());
    }
    let shown = redact_url(config.database.url.expose_secret());
    let client = match crate::db::session(&config.database).await {
        Ok(client) => {
            let tls = match (crate::db::tls(&config.database), crate::db::status::session_encrypted(client.sql()).await)
            {
                (Ok(tls), Ok(encrypted)) => tls.describe(encrypted),
                (Ok(tls), Err(_)) => format!("sslmode={}", tls.mode),
                (Err(e), _) => e.to_string(),
            };
            report(true, "database", format!("connected to {shown}  ({tls})"));
            client
        }
        Err(e) => {
            report(false, "database", format!("{e} ({shown})"));
            return ok;
        }
    };
    match crate::db::migrate::status(client.sql()).await {
        Ok(status) => report(status.is_current(), "schema", status.explain()),
        Err(e) => report(false, "schema", e.to_string()),
    }
    match published(&config, client.sql()).await {
        Ok(line) => report(true, "published", line),
        Err(warning) => println!("warn {:<14} {warning}", "published"),
    }
    match crate::db::marketplace::inspect(client.sql()).await {
        Ok(columns) => {
            for c in columns {
                report(c.ok, "column", format!("{} {}", c.column, c.detail));
            }
        }
        Err(e) => report(false, "column", format!("cannot inspect the marketplace columns: {e}")),
    }
    ok
}

/// What the daemons published for the database's rules of a service's meeting platform
/// (`meetingd.platforms`), against what this configuration offers: `Err` is a warning (nothing
/// published yet, or another configuration's offering), never a failure, since the daemon
/// publishes at its start.
async fn published(config: &Config, db: crate::db::Sql<'_>) -> Result<String, String> {
    let rows = crate::db::platforms::published(db).await.map_err(|e| format!("cannot read meetingd.platforms: {e}"))?;
    let Some(first) = rows.iter().max_by_key(|r| r.at) else {
        return Err("no daemon has published the platforms yet: until one starts, meetingd.set_service_meeting \
                    refuses a named platform (platforms_unpublished)"
            .into());
    };
    let describe = |offered: Vec<(&str, bool)>| {
        offered
            .iter()
            .map(|(p, fallback)| if *fallback { format!("{p} (fallback)") } else { p.to_string() })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let theirs = describe(rows.iter().filter(|r| r.offered).map(|r| (r.platform.as_str(), r.fallback)).collect());
    let line = format!("{theirs} offered, by {} at {}", first.by, first.at.format("%Y-%m-%d %H:%M:%S UTC"));
    // This configuration's offering, when its providers can be built here (they need the key).
    let keyring = config.encryption.keyring().ok();
    let pool = crate::db::pool(&config.database, 1).ok();
    let connectors = crate::providers::auth::Connectors::from_config(config).ok();
    let (Some(keyring), Some(pool), Some(connectors)) = (keyring, pool, connectors) else {
        return Ok(line);
    };
    let deps = crate::providers::ProviderDeps { pool, keyring: std::sync::Arc::new(keyring), actor: "check".into() };
    let Ok(providers) = crate::providers::Providers::real(config, &deps) else {
        return Ok(line);
    };
    let mut offer = crate::providers::offer::offering(&providers, &connectors, config.fallback.platform);
    offer.sort_by_key(|p| p.platform);
    let mine = describe(offer.iter().filter(|p| p.offered).map(|p| (p.platform, p.fallback)).collect());
    if mine == theirs {
        Ok(format!("{line}; as this configuration"))
    } else {
        Err(format!(
            "{line}; this configuration offers {mine}: restart the daemons with it so that the SQL rules follow"
        ))
    }
}

/// `check`'s warnings about bearer tokens: settings that work but let tokens meant for something
/// else through. They do not fail the check.
fn warn_bearer_tokens(config: &Config) {
    for warning in config.http.jwt_warnings() {
        println!("warn {:<14} {warning}", "http");
    }
}

/// `check`'s problems the daemon starts with anyway: platform URLs in plain http to another
/// machine (a problem), and a lease that can run out mid-job (a warning: the claim's fencing keeps
/// a second holder from writing over the first, so only the slowest, rarest jobs pay, with work
/// done twice; a lease long enough for them would hold a crashed daemon's jobs that long).
fn report_traps(config: &Config, report: &mut impl FnMut(bool, &str, String)) {
    if let Some(problem) = config.lease_problem() {
        println!("warn {:<14} {problem}", "worker");
    }
    for problem in config.plain_http_problems() {
        report(false, "transport", problem);
    }
}
