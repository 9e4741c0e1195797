//! The OpenAPI document's examples for the endpoints the app uses: present, valid against their
//! own schema, and shaped as the endpoint really answers (the error examples word for word).

use std::time::Duration;

use meetingd_testkit::db::eventually;
use meetingd_testkit::market::{self, meeting};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::Api;

/// The examples of one response in `doc` (`example`, or each of `examples`), and its schema.
fn examples(doc: &Value, path: &str, method: &str, status: u16) -> (Vec<Value>, Value) {
    let content = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"];
    let mut found: Vec<Value> = content.get("example").into_iter().cloned().collect();
    if let Some(named) = content.get("examples").and_then(Value::as_object) {
        found.extend(named.values().map(|e| e["value"].clone()));
    }
    assert!(!found.is_empty(), "{method} {path} {status} has an example: {content}");
    (found, content["schema"].clone())
}

/// Whether `value` fits `schema` (the subset of JSON Schema utoipa writes: `$ref`, `oneOf`,
/// `allOf`, `type`, `properties`, `required`, `items`, `format` uuid and date-time). A key the
/// schema does not name is an error too.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        let name = name.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(alternatives) = schema.get("oneOf").or_else(|| schema.get("anyOf")).and_then(Value::as_array) {
        return match alternatives.iter().any(|s| conforms(doc, s, value, at).is_ok()) {
            true => Ok(()),
            false => Err(format!("{at}: {value} fits none of {alternatives:?}")),
        };
    }
    for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        conforms(doc, part, value, at)?;
    }
    let actual = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| *t == actual || (*t == "number" && actual == "integer")) {
        return Err(format!("{at}: {value} is {actual}, the schema says {types:?}"));
    }
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !map.contains_key(key) {
                    return Err(format!("{at}: required {key} missing"));
                }
            }
            if let Some(properties) = properties {
                for (key, v) in map {
                    let s = properties.get(key).ok_or_else(|| format!("{at}: {key} is not in the schema"))?;
                    conforms(doc, s, v, &format!("{at}.{key}"))?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    conforms(doc, s, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::String(s) => match schema.get("format").and_then(Value::as_str) {
            Some("uuid") if s.parse::<uuid::Uuid>().is_err() => return Err(format!("{at}: {s} is not a UUID")),
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                return Err(format!("{at}: {s} is not a date-time"));
            }
            _ => {}
        },
        _ => {}
    }
    Ok(())
}

/// Whether `example` has the shape of `real`: the same keys in every object, values of the same
/// JSON type (`null` fits either way, as an optional field may be absent of a value).
fn same_shape(example: &Value, real: &Value, at: &str) -> Result<(), String> {
    match (example, real) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Object(a), Value::Object(b)) => {
            let (mut ka, mut kb): (Vec<&String>, Vec<&String>) = (a.keys().collect(), b.keys().collect());
            ka.sort();
            kb.sort();
            if ka != kb {
                return Err(format!("{at}: the example has keys {ka:?}, the answer {kb:?}"));
            }
            a.iter().try_for_each(|(k, v)| same_shape(v, &b[k], &format!("{at}.{k}")))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.iter().try_for_each(|x| b.iter().try_for_each(|y| same_shape(x, y, &format!("{at}[]"))))
        }
        (a, b) if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(()),
        (a, b) => Err(format!("{at}: the example has {a}, the answer {b}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_endpoints_carry_examples_that_fit_their_schema_and_the_real_answers() {
    // Google Meet not configured: the platform_unavailable example is this deployment's answer.
    let api = Api::start_with(|c| c.google.client_id = String::new()).await;
    let doc: Value = api.call("GET", "/api/openapi.json", None, None).await.json().await.unwrap();
    let service = market::service(&api.c, api.provider, true, Some("jitsi")).await;
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let api = &api;
        async move {
            let r = api.call(method, &path, Some(api.as_user(api.provider)), body).await;
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let meeting_path = format!("/api/services/{service}/meeting");
    let (doc_path, put) = ("/api/services/{id}/meeting", "put");

    // Every example fits its schema.
    let listed: [(&str, &str, u16); 8] = [
        ("/api/platforms", "get", 200),
        (doc_path, "get", 200),
        (doc_path, put, 200),
        (doc_path, put, 409),
        (doc_path, put, 422),
        ("/api/integrations", "get", 200),
        ("/api/bookings/{booking_id}/meeting", "get", 200),
        ("/api/auth/{platform}/connect", "post", 200),
    ];
    for (path, method, status) in &listed {
        let (found, schema) = examples(&doc, path, method, *status);
        for example in &found {
            conforms(&doc, &schema, example, &format!("{method} {path} {status}")).unwrap();
        }
    }
    let request = &doc["paths"][doc_path][put]["requestBody"]["content"]["application/json"];
    let body_example = request["example"].clone();
    conforms(&doc, &request["schema"], &body_example, "PUT body").unwrap();

    // The error examples are this server's answers, word for word.
    let (_, conflict) = call("PUT", meeting_path.clone(), Some(body_example.clone())).await;
    assert_eq!(vec![conflict], examples(&doc, doc_path, put, 409).0, "409");
    let mut refusals = Vec::new();
    for body in [
        json!({"platform": null}),
        json!({"platform": "skype"}),
        json!({"platform": "google_meet"}),
        json!({"platform": "zoom", "settings": {"recording": "always"}}),
        json!({"platform": "teams", "settings": {"mute_on_entry": true}}),
    ] {
        let (status, answer) = call("PUT", meeting_path.clone(), Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        refusals.push(answer);
    }
    let mut expected = examples(&doc, doc_path, put, 422).0;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap().to_string();
    refusals.sort_by_key(code);
    expected.sort_by_key(code);
    assert_eq!(refusals, expected, "one 422 example per refusal, as answered");

    // The others have the shape of the real answers.
    let shape = |path: &str, method: &str, status: u16, real: &Value| {
        for example in examples(&doc, path, method, status).0 {
            same_shape(&example, real, &format!("{method} {path}")).unwrap();
        }
    };
    let (status, connect) = call("POST", "/api/auth/zoom/connect".into(), None).await;
    assert_eq!(status, StatusCode::OK);
    shape("/api/auth/{platform}/connect", "post", 200, &connect);
    api.connect(api.provider, "zoom", |url| api.zoom.consent(url)).await;
    let b = market::book(&api.c, service, api.customer, "confirmed").await;
    let (status, saved) = call("PUT", meeting_path.clone(), Some(body_example.clone())).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    shape(doc_path, put, 200, &saved);
    let (_, shown) = call("GET", meeting_path.clone(), None).await;
    shape(doc_path, "get", 200, &shown);
    let (_, platforms) = call("GET", "/api/platforms".into(), None).await;
    for example in examples(&doc, "/api/platforms", "get", 200).0[0].as_array().unwrap() {
        let real = platforms.as_array().unwrap().iter().find(|p| p["platform"] == example["platform"]).unwrap();
        same_shape(example, real, "GET /api/platforms").unwrap();
        assert_eq!(example["options"], real["options"], "{}", example["platform"]);
    }
    let (_, integrations) = call("GET", "/api/integrations".into(), None).await;
    shape("/api/integrations", "get", 200, &integrations);
    eventually("the booking's Zoom meeting", Duration::from_secs(20), || async {
        let m = meeting(&api.c, b).await;
        (m.platform.as_deref() == Some("zoom") && m.status.as_deref() == Some("ready")).then_some(())
    })
    .await;
    let (_, linked) = call("GET", format!("/api/bookings/{b}/meeting"), None).await;
    assert!(linked["meeting_link"].is_string(), "{linked}");
    shape("/api/bookings/{booking_id}/meeting", "get", 200, &linked);
    api.stop().await;
}
