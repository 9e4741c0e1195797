//! The static files' routes, served on a loopback port and fetched as a browser would.

use axum::http::{StatusCode, header};

use super::{ELEMENTS_JS, routes};
use crate::config::Config;

/// Serves the routes under `adjust`ed defaults; their base URL.
async fn serve(adjust: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::defaults();
    adjust(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = routes::<()>(&config.http);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

#[tokio::test]
async fn the_module_is_javascript_cached_and_revalidated_by_its_etag() {
    let base = serve(|_| {}).await;
    let first = client().get(format!("{base}/ui/meetingd-elements.js")).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let headers = first.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300, must-revalidate");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(first.text().await.unwrap(), ELEMENTS_JS);
    let tag = headers[header::ETAG].to_str().unwrap().to_string();
    assert!(tag.starts_with('"') && tag.len() > 10, "{tag}");

    let again = client()
        .get(format!("{base}/ui/meetingd-elements.js"))
        .header(header::IF_NONE_MATCH, format!("W/\"other\", {tag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[header::ETAG], tag.as_str());
    let stale =
        client().get(format!("{base}/ui/meetingd-elements.js")).header(header::IF_NONE_MATCH, "\"old\"").send().await;
    assert_eq!(stale.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn the_demo_page_is_served_only_with_ui_demo() {
    let off = serve(|_| {}).await;
    for path in ["/ui/", "/ui/demo.js", "/ui/demo.css", "/dashboard/integrations"] {
        let status = client().get(format!("{off}{path}")).send().await.unwrap().status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} without http.ui_demo");
    }

    let on = serve(|c| c.http.ui_demo = true).await;
    let page = client().get(format!("{on}/ui/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-store");
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<meetingd-integrations>") && html.contains("/ui/demo.js"));
    let script = client().get(format!("{on}/ui/demo.js")).send().await.unwrap();
    assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    let bare = client().get(format!("{on}/ui")).send().await.unwrap();
    assert_eq!(
        (bare.status(), bare.headers()[header::LOCATION].to_str().unwrap()),
        (StatusCode::PERMANENT_REDIRECT, "/ui/")
    );
    // The defaults' app_url is another origin than public_url: the app's own page, not meetingd's.
    let status = client().get(format!("{on}/dashboard/integrations")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::NOT_FOUND);

    let own = serve(|c| {
        c.http.ui_demo = true;
        c.http.app_url = c.http.public_url.clone();
    })
    .await;
    let back = client().get(format!("{own}/dashboard/integrations?connected=zoom")).send().await.unwrap();
    assert_eq!(
        (back.status(), back.headers()[header::LOCATION].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/ui/?connected=zoom")
    );
}
