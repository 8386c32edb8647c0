//! The one error type of the service's handlers, and how each kind of failure
//! becomes an HTTP status with a JSON `{"error": "..."}` body.

use std::fmt;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::db::DbError;

/// Why a request failed.
#[derive(Debug)]
pub enum AppError {
    /// 404: the resource does not exist.
    NotFound(String),
    /// 400: the request is malformed (bad id, bad JSON, invalid field).
    BadRequest(String),
    /// 500: the service failed. The details are logged, not sent.
    Internal(String),
    /// 503: a part of the service is not available (the message says which,
    /// and is sent).
    Unavailable(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::NotFound(message)
            | AppError::BadRequest(message)
            | AppError::Unavailable(message) => f.write_str(message),
            AppError::Internal(message) => write!(f, "internal error: {message}"),
        }
    }
}

impl std::error::Error for AppError {}

impl From<DbError> for AppError {
    fn from(error: DbError) -> Self {
        AppError::Internal(error.to_string())
    }
}

// Axum answers a bad body with 415 or 422 and a plain-text message; this API
// promises 400 and JSON for every malformed request, so handlers take
// `Result<Json<T>, JsonRejection>` and `?` lands here.
impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        match rejection {
            PathRejection::FailedToDeserializePathParams(e) => AppError::BadRequest(e.body_text()),
            // A route whose pattern lacks the parameter: our bug, not the client's.
            other => AppError::Internal(other.body_text()),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            AppError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            AppError::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
            AppError::Internal(message) => {
                tracing::error!(error = %message, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the service's log".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
