//! `/healthz` (the process answers), `/readyz` (database, LISTEN, migrations) and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::db::Pool;
use crate::db::listen::ListenerState;

#[derive(Clone)]
pub struct Health {
    pub pool: Pool,
    /// `None` in poll-only mode.
    pub listener: Option<Arc<ListenerState>>,
    /// Whether the daemon's loops are running (`None`: not reported).
    pub liveness: Option<Arc<crate::systemd::Liveness>>,
}

pub fn routes(health: Health) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health)
}

/// The operations server: health plus Prometheus metrics.
pub fn ops_routes(health: Health, metrics: PrometheusHandle) -> Router {
    routes(health).route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()) }
        }),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let (database, migrations) = match h.pool.get().await {
        Err(e) => (format!("down: {e}"), "unknown".to_string()),
        Ok(client) => match crate::db::migrate::status(client.sql()).await {
            Ok(s) if s.is_current() => ("ok".into(), "current".into()),
            Ok(s) => ("ok".into(), s.explain()),
            Err(e) => (format!("error: {e}"), "unknown".into()),
        },
    };
    let listener = match &h.listener {
        None => "disabled (polling)".to_string(),
        Some(l) if l.is_connected() => "ok".into(),
        Some(_) => "reconnecting".into(),
    };
    let down = h.liveness.as_ref().map(|l| l.down()).unwrap_or_default();
    let dispatcher = if down.contains(&crate::systemd::Loop::Dispatcher) { "down: restarting" } else { "ok" };
    let listener =
        if down.contains(&crate::systemd::Loop::Listener) { "down: restarting".to_string() } else { listener };
    let ready =
        database == "ok" && migrations == "current" && down.is_empty() && (listener == "ok" || h.listener.is_none());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(
            json!({"ready": ready, "database": database, "migrations": migrations, "listener": listener, "dispatcher": dispatcher}),
        ),
    )
}
