//! The rules of a service's meeting platform, the same through `PUT /api/services/{id}/meeting`
//! and through the SQL functions an app that writes `services` itself calls
//! (`meetingd.check_service_meeting`, `meetingd.set_service_meeting`); what the daemon publishes
//! for them; and the SQL settings rules against `settings::parse`, on generated settings.

use std::sync::Arc;

use meetingd::config::Fallback;
use meetingd::providers::auth::Connectors;
use meetingd::providers::offer::offering;
use meetingd::providers::{MeetingOption, MeetingOptions, Platform, ProviderDeps, Providers, Recording};
use meetingd_testkit::db::TestDb;
use meetingd_testkit::fake_google::FakeGoogle;
use meetingd_testkit::fake_graph::FakeGraph;
use meetingd_testkit::fake_zoom::FakeZoom;
use meetingd_testkit::market;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Api;

/// The first refusal `check_service_meeting` names, if any.
async fn check(c: &tokio_postgres::Client, service: Uuid, platform: Option<&str>, settings: &Value) -> Option<String> {
    c.query_opt("SELECT code FROM meetingd.check_service_meeting($1, $2, $3)", &[&service, &platform, settings])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// `set_service_meeting` in a transaction that is rolled back: `None` when accepted, else the
/// code its error carries (and its SQLSTATE).
async fn set(
    c: &mut tokio_postgres::Client,
    service: Uuid,
    platform: Option<&str>,
    settings: &Value,
) -> Option<String> {
    let tx = c.transaction().await.unwrap();
    let answer =
        tx.query_one("SELECT meetingd.set_service_meeting($1, $2, $3)", &[&service, &platform, settings]).await;
    tx.rollback().await.unwrap();
    match answer {
        Ok(_) => None,
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
            let code = db.detail().unwrap().to_string();
            let state = if code == "platform_not_connected" { "MD409" } else { "MD422" };
            assert_eq!(db.code().code(), state, "{code}");
            Some(code)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_put_and_the_sql_functions_refuse_alike_case_by_case() {
    // Google Meet not configured here: not offered.
    let api = Api::start_with(|c| c.google.client_id = String::new()).await;
    let mut app = api._db.client().await;
    let online = market::service(&api.c, api.provider, true, Some("jitsi")).await;
    let offline = market::service(&api.c, api.provider, false, None).await;
    let cases: Vec<(Uuid, Option<&str>, Value, Option<&str>)> = vec![
        (online, None, json!({}), Some("platform_required")),
        (online, Some("  "), json!({}), Some("platform_required")),
        (offline, None, json!({}), None),
        (online, Some("skype"), json!({}), Some("unknown_platform")),
        (online, Some("google_meet"), json!({}), Some("platform_unavailable")),
        (online, Some("zoom"), json!({"lobby": true}), Some("invalid_settings")),
        (online, Some("zoom"), json!({"recording": "always"}), Some("invalid_settings")),
        (online, Some("zoom"), json!({"passcode": 1}), Some("invalid_settings")),
        (online, Some("zoom"), json!({"title": "{room}"}), Some("invalid_settings")),
        (online, Some("zoom"), json!(["waiting_room"]), Some("invalid_settings")),
        (offline, None, json!({"waiting_room": "yes"}), Some("invalid_settings")),
        (online, Some("teams"), json!({"mute_on_entry": true}), Some("unsupported_option")),
        // Teams records to the cloud only: a value the provider says it ignores.
        (online, Some("teams"), json!({"recording": "local"}), Some("unsupported_option")),
        (online, Some("teams"), json!({"recording": "cloud"}), Some("platform_not_connected")),
        (online, Some("jitsi"), json!({"passcode": false}), Some("unsupported_option")),
        (online, Some("zoom"), json!({"waiting_room": true, "mute_on_entry": true}), Some("platform_not_connected")),
        (online, Some(" jitsi "), json!({"title": "{service} with {customer}", "waiting_room": null}), None),
        (online, Some("jitsi"), Value::Null, None),
    ];
    for (service, platform, settings, expected) in &cases {
        let r = api
            .call(
                "PUT",
                &format!("/api/services/{service}/meeting"),
                Some(api.as_user(api.provider)),
                Some(json!({"platform": platform, "settings": settings})),
            )
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        let put = (status != StatusCode::OK).then(|| body["error"]["code"].as_str().unwrap().to_string());
        let what = format!("{platform:?} {settings}");
        assert_eq!(put.as_deref(), *expected, "PUT {what}: {body}");
        let want = match expected {
            None => StatusCode::OK,
            Some("platform_not_connected") => StatusCode::CONFLICT,
            Some(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        assert_eq!(status, want, "{what}");
        assert_eq!(check(&api.c, *service, *platform, settings).await.as_deref(), *expected, "check {what}");
        assert_eq!(set(&mut app, *service, *platform, settings).await.as_deref(), *expected, "set {what}");
    }

    // What PostgreSQL cannot hold is refused too, not a 500.
    for (body, code) in [
        (json!({"platform": "jitsi", "settings": {"title": "a\u{0}b"}}), "invalid_settings"),
        (json!({"platform": "jit\u{0}si"}), "unknown_platform"),
    ] {
        let r = api
            .call("PUT", &format!("/api/services/{online}/meeting"), Some(api.as_user(api.provider)), Some(body))
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code);
    }

    // A connection makes the same change acceptable to both.
    api.connect(api.provider, "zoom", |url| api.zoom.consent(url)).await;
    let settings = json!({"waiting_room": true, "mute_on_entry": true});
    assert_eq!(check(&api.c, online, Some("zoom"), &settings).await, None);
    let b = market::book(&api.c, online, api.customer, "confirmed").await;
    let rearmed: i64 = app
        .query_one("SELECT meetingd.set_service_meeting($1, 'zoom', $2)", &[&online, &settings])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rearmed, 1, "the app's write re-arms the upcoming booking as the PUT does");
    let row = api
        .c
        .query_one("SELECT meeting_platform, meeting_settings FROM services WHERE id = $1", &[&online])
        .await
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, Value>(1)), ("zoom".to_string(), settings));
    assert!(market::job(&api.c, b).await.is_some(), "the booking has its job");
    api.stop().await;
}

/// The real providers of a deployment where every platform is configured (at the fakes).
async fn real_providers(db: &TestDb) -> (meetingd::config::Config, Providers, FakeGoogle, FakeZoom, FakeGraph) {
    let (google, zoom, graph) = (FakeGoogle::start().await, FakeZoom::start().await, FakeGraph::start().await);
    let mut config = db.config();
    google.configure(&mut config);
    zoom.configure(&mut config);
    graph.configure(&mut config);
    let deps = ProviderDeps {
        pool: meetingd::db::pool(&config.database, 1).unwrap(),
        keyring: Arc::new(config.encryption.keyring().unwrap()),
        actor: "test".into(),
    };
    let providers = Providers::real(&config, &deps).unwrap();
    (config, providers, google, zoom, graph)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_daemon_publishes_is_what_each_provider_honours() {
    let db = TestDb::migrated().await;
    let c = db.client().await;
    let provider = market::user(&c, "provider").await;
    let online = market::service(&c, provider, true, None).await;
    let offline = market::service(&c, provider, false, None).await;

    // Nothing published yet: a named platform cannot be judged; no platform on an offline
    // service needs nothing published.
    assert_eq!(check(&c, online, Some("jitsi"), &json!({})).await.as_deref(), Some("platforms_unpublished"));
    assert_eq!(check(&c, offline, None, &json!({})).await, None);
    let e = c.query_one("SELECT meetingd.set_service_meeting($1, 'jitsi', '{}')", &[&online]).await.unwrap_err();
    assert_eq!(e.as_db_error().map(|d| (d.code().code(), d.detail())), Some(("MD503", Some("platforms_unpublished"))));

    let (config, providers, _google, _zoom, _graph) = real_providers(&db).await;
    let connectors = Connectors::from_config(&config).unwrap();
    c.execute(
        "INSERT INTO meetingd.platforms (platform, display_name, needs_account, offered, published_by)
         VALUES ('skype', 'Skype', true, true, 'an older daemon')",
        &[],
    )
    .await
    .unwrap();
    let offer = offering(&providers, &connectors, Fallback::Platform(Platform::Jitsi));
    let sql = meetingd::db::pool(&config.database, 1).unwrap();
    meetingd::db::platforms::publish(sql.get().await.unwrap().sql(), &offer, "daemon:test").await.unwrap();
    let published: Vec<(String, bool, Vec<String>, bool)> = c
        .query("SELECT platform, offered, options, fallback FROM meetingd.platforms ORDER BY platform", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let names: Vec<&str> = published.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["google_meet", "jitsi", "teams", "zoom"], "every known platform; one no longer known is gone");
    assert!(published.iter().all(|p| p.1), "all four configured: {published:?}");
    let offered = market::strings(&c, "SELECT platform FROM meetingd.offered_platforms WHERE fallback").await;
    assert_eq!(offered, ["jitsi"]);

    // Each option and value, alone, on each platform: refused by the database exactly when the
    // platform's own provider says it ignores it (else the next rule speaks: not connected).
    let mut seen_value_rule = false;
    for platform in Platform::ALL {
        let provider = providers.get(platform).unwrap();
        let options = &published.iter().find(|p| p.0 == platform.as_str()).unwrap().2;
        let supported: Vec<&str> = provider.supported_options().iter().map(|o| o.as_str()).collect();
        assert_eq!(options, &supported, "{platform}: the options column is GET /api/platforms' list");
        for (option, value, set) in every_option_value() {
            let ignored = provider.ignored_options(&set).contains(&option);
            seen_value_rule |= ignored && supported.contains(&option.as_str());
            let settings = json!({ option.as_str(): value });
            let got = check(&c, online, Some(platform.as_str()), &settings).await;
            let expected = if ignored {
                Some("unsupported_option")
            } else if platform.needs_account() {
                Some("platform_not_connected")
            } else {
                None
            };
            assert_eq!(got.as_deref(), expected, "{platform} {settings}");
        }
    }
    assert!(seen_value_rule, "a supported option refused for one value (Teams, recording local) is covered");
}

fn every_option_value() -> Vec<(MeetingOption, Value, MeetingOptions)> {
    let mut all = Vec::new();
    for b in [true, false] {
        all.push((
            MeetingOption::WaitingRoom,
            json!(b),
            MeetingOptions { waiting_room: Some(b), ..Default::default() },
        ));
        all.push((MeetingOption::Passcode, json!(b), MeetingOptions { passcode: Some(b), ..Default::default() }));
        all.push((
            MeetingOption::MuteOnEntry,
            json!(b),
            MeetingOptions { mute_on_entry: Some(b), ..Default::default() },
        ));
    }
    for r in Recording::ALL {
        all.push((
            MeetingOption::Recording,
            json!(r.as_str()),
            MeetingOptions { recording: Some(r), ..Default::default() },
        ));
    }
    all
}

/// Settings-like JSON: mostly objects of the accepted keys (and a few others) with values of
/// every kind, including the edge cases of each rule.
fn settings_strategy() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just("{service} with {customer}".to_string()),
        Just("{provider}: {service}".to_string()),
        Just("{room}".to_string()),
        Just("open {".to_string()),
        Just("a } b {customer}".to_string()),
        Just("{{service}}".to_string()),
        Just("é".repeat(300)),
        Just("é".repeat(301)),
        Just("x".repeat(8000)),
        Just("x".repeat(8001)),
        "[a-z{} ]{0,12}",
    ];
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(Value::from),
        prop_oneof![Just("none"), Just("local"), Just("cloud"), Just("Cloud"), Just("always"), Just("")]
            .prop_map(Value::from),
        text.prop_map(Value::String),
        Just(json!([])),
        Just(json!(["cloud"])),
        Just(json!({})),
    ]
    .boxed();
    let key = prop_oneof![
        8 => prop_oneof![
            Just("title"), Just("description"), Just("waiting_room"), Just("recording"), Just("passcode"),
            Just("mute_on_entry")
        ],
        1 => prop_oneof![Just("lobby"), Just("Title"), Just("zz"), Just("a")],
    ];
    let object = proptest::collection::vec((key, value.clone()), 0..5)
        .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![9 => object, 1 => value]
}

#[test]
fn the_sql_settings_rules_are_settings_parse() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (db, c) = rt.block_on(async {
        let db = TestDb::migrated().await;
        let c = db.client().await;
        (db, c)
    });
    let mut runner = TestRunner::new(ProptestConfig { cases: 600, ..ProptestConfig::default() });
    runner
        .run(&settings_strategy(), |settings| {
            let row = rt
                .block_on(
                    c.query_one("SELECT message, $1::jsonb FROM meetingd.meeting_settings_error($1)", &[&settings]),
                )
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let sql: Option<String> = row.get(0);
            // As the worker reads it: stored, keys in jsonb's order.
            let rust = meetingd::settings::parse(&row.get::<_, Value>(1)).err();
            prop_assert_eq!(sql, rust, "{}", settings);
            Ok(())
        })
        .unwrap();
    drop(db);
}
