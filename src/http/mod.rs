//! The HTTP API for the marketplace's web app (axum on hyper).
//!
//! Owns routing, the shared state of handlers, body limits and the OpenAPI document. Handlers
//! never call a meeting platform directly (except OAuth: code exchange, the account lookup and
//! revocation, through `providers::auth`): meeting changes are queued for the daemon's worker.
//! Handlers hold no SQL: their statements are `db`'s. Every route but the OAuth callback, Zoom's
//! webhook (`webhooks.rs`, signed by Zoom instead), the OpenAPI document and the static files of
//! the web components (`ui.rs`) needs the app's bearer token.

pub mod auth;
pub mod connect;
pub mod error;
pub mod health;
pub mod integrations;
pub mod meetings;
pub mod platforms;
pub mod services;
pub mod ui;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::config::Config;
use crate::crypto::Keyring;
use crate::db::Pool;
use crate::providers::auth::Connectors;
use crate::providers::{MeetingProvider, Platform, Providers};
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub keyring: Arc<Keyring>,
    pub config: Arc<Config>,
    pub jwt: Arc<auth::JwtVerifier>,
    /// The platforms whose accounts can be connected (their OAuth clients are configured).
    pub connectors: Connectors,
    /// Zoom's webhook, when Zoom and its webhook secret token are configured.
    pub zoom_webhook: Option<Arc<webhooks::ZoomWebhook>>,
    /// The platforms meetings are made on (what `GET /api/platforms` offers): the daemon's own
    /// (see [`AppState::with_providers`]), else those that need no account.
    pub providers: Providers,
}

impl AppState {
    pub fn new(pool: Pool, keyring: Arc<Keyring>, config: &Config) -> Result<AppState, String> {
        let jwt = auth::JwtVerifier::from_config(&config.http)?.ok_or_else(|| {
            "the HTTP API needs the app's JWT key: set http.jwt_secret (or jwt_secret_file) for HS256, \
             http.jwt_public_key_file for RS256/ES256, or http.jwt_jwks_url for an auth service's published \
             keys — or http.listen = \"\" to run without the API"
                .to_string()
        })?;
        tracing::info!(keys = %jwt.describe(), "bearer tokens");
        for warning in config.http.jwt_warnings() {
            tracing::warn!("{warning}");
        }
        let connectors = Connectors::from_config(config)?;
        let zoom_webhook = webhooks::ZoomWebhook::from_config(&config.zoom)?.map(Arc::new);
        let providers = Providers::from_config(config);
        Ok(AppState {
            pool,
            keyring,
            config: Arc::new(config.clone()),
            jwt: Arc::new(jwt),
            connectors,
            zoom_webhook,
            providers,
        })
    }

    /// The same state, offering the platforms of `providers` (the worker's).
    pub fn with_providers(mut self, providers: Providers) -> AppState {
        self.providers = providers;
        self
    }

    /// The platforms' grant lifetimes, for the connections' status (`expiring`).
    pub fn lifetimes(&self) -> crate::db::health::LifetimeParams {
        crate::monitor::Lifetimes::new(&self.connectors, &self.config.monitor).params()
    }

    /// The provider of `platform` when this server offers it: meetings are made on it, and a
    /// platform with accounts can have them connected here.
    pub fn offered(&self, platform: Platform) -> Option<&Arc<dyn MeetingProvider>> {
        crate::providers::offer::offered(&self.providers, &self.connectors, platform)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "meetingd API", description = "Online-meeting links for marketplace bookings: connect platforms, manage meetings, export calendars."),
    paths(
        connect::connect, connect::callback, platforms::list, services::show, services::update, integrations::list, integrations::remove,
        meetings::create, meetings::update, meetings::delete, meetings::show, meetings::calendar, webhooks::zoom,
        openapi_json
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, connect::ConnectResponse, platforms::PlatformView, services::ServiceMeetingView, services::ServiceMeetingUpdate, integrations::IntegrationView, integrations::ConnectionStatus,
        meetings::CreateRequest, meetings::UpdateRequest, meetings::MeetingView, webhooks::UrlValidationResponse
    )),
    modifiers(&BearerAuth),
    tags((name = "integrations", description = "Providers' platform accounts"), (name = "meetings", description = "Meetings of bookings"),
        (name = "services", description = "A service's meeting platform and settings, for its provider"),
        (name = "webhooks", description = "Notifications from the platforms, signed by them (no bearer token)"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.http.body_limit_bytes;
    Router::new()
        .route("/api/auth/{platform}/connect", post(connect::connect))
        .route("/api/auth/{platform}/callback", get(connect::callback))
        .route("/api/platforms", get(platforms::list))
        .route("/api/services/{id}/meeting", get(services::show).put(services::update))
        .route("/api/integrations", get(integrations::list))
        .route("/api/integrations/{platform}", delete(integrations::remove))
        .route("/api/meetings/create", post(meetings::create))
        .route("/api/meetings/{booking_id}/update", put(meetings::update))
        .route("/api/meetings/{booking_id}", delete(meetings::delete))
        .route("/api/bookings/{booking_id}/meeting", get(meetings::show))
        .route("/api/bookings/{booking_id}/calendar.ics", get(meetings::calendar))
        .route("/api/webhooks/zoom", post(webhooks::zoom))
        .route("/api/openapi.json", get(openapi_json))
        .merge(ui::routes(&state.config.http))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
                .into_response()
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves `router` until `shutdown`, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP listening");
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
