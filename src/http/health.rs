//! `/healthz` (the process answers), `/readyz` (database, LISTEN, migrations) and `/metrics`.
//!
//! `/readyz` is also served on the API listener, so it names a database problem by its class
//! only (`unavailable`, `timeout`, `auth`, `tls`, `error`): the server's own text can name hosts,
//! roles and databases. The detail goes to the log.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::db::listen::ListenerState;
use crate::db::{DbError, Pool};

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
        Err(e) => (down(&DbError::Pool(e)), "unknown".to_string()),
        Ok(client) => match crate::db::migrate::status(client.sql()).await {
            Ok(s) if s.is_current() => ("ok".into(), "current".into()),
            Ok(s) => ("ok".into(), s.explain()),
            Err(e) => (down(&e), "unknown".into()),
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

/// What `/readyz` says about a database error (`down: <class>`); the detail is logged.
fn down(e: &DbError) -> String {
    let class = cause(e);
    tracing::warn!(error = %e, cause = class, "readiness check: database not usable");
    format!("down: {class}")
}

/// The class of a database error, without any of its text.
pub fn cause(e: &DbError) -> &'static str {
    use tokio_postgres::error::SqlState;
    let pg = match e {
        DbError::Connect(e) | DbError::Query(e) => Some(e),
        DbError::Pool(deadpool_postgres::PoolError::Backend(e)) => Some(e),
        _ => None,
    };
    let auth = [SqlState::INVALID_PASSWORD, SqlState::INVALID_AUTHORIZATION_SPECIFICATION];
    let tls = |e: &tokio_postgres::Error| {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let io_tls =
                s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).is_some_and(|i| i.is::<rustls::Error>());
            if s.is::<rustls::Error>() || io_tls {
                return true;
            }
            source = s.source();
        }
        false
    };
    match (e, pg) {
        (DbError::Pool(deadpool_postgres::PoolError::Timeout(_)), _) => "timeout",
        (_, Some(pg)) if pg.code().is_some_and(|c| auth.contains(c)) => "auth",
        (DbError::Tls(_), _) => "tls",
        (_, Some(pg)) if tls(pg) => "tls",
        (_, Some(pg)) if pg.code() == Some(&SqlState::QUERY_CANCELED) => "timeout",
        _ if e.is_unavailable() => "unavailable",
        (DbError::Pool(_) | DbError::Connect(_), _) => "unavailable",
        _ => "error",
    }
}
