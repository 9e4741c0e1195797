//! The API's error type: `{"error": {"code", "message"}}` with the right status.
//!
//! Internal causes are logged with their whole chain and answered with an opaque 500; nothing a
//! client sends can make the server answer 5xx for its own mistake.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `unauthenticated`, `not_found`, `invalid_json`.
    #[schema(example = "platform_not_connected")]
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Where to send the user to fix it (`platform_not_connected`: the app's Integrations page).
    #[schema(example = "https://app.example.com/dashboard/integrations")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub location: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), location: None }
    }

    /// The same error, naming where the user fixes it.
    pub fn at(mut self, location: impl Into<String>) -> ApiError {
        self.location = Some(location.into());
        self
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Also what a caller gets for a row they may not know exists.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Logs `cause` and answers an opaque 500.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "API request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the cause is in meetingd's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code.to_string(), message: self.message, location: self.location },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::internal(e)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        ApiError::internal(crate::db::DbError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        if matches!(e, deadpool_postgres::PoolError::Timeout(_)) {
            tracing::warn!("every API database connection is busy (http.pool_size); answered 503");
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "meetingd is busy; try again in a moment");
        }
        ApiError::internal(crate::db::DbError::Pool(e))
    }
}
