//! The HTTP API: routes, and handlers that turn requests into calls of
//! [`users`] and the cache's health and counters into JSON.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /users/{id}` | the user (cached); `x-cache: hit` if no query ran for it |
//! | `GET /users` | every user (cached) |
//! | `PUT /users/{id}` | updates `{name, email}`, invalidates the entry and the list |
//! | `POST /users` | creates `{name, email}` (201), invalidates the list |
//! | `GET /health` | 200 if the cache backend answers, 503 if not |
//! | `GET /stats` | the cache's counters and the database queries run |
//!
//! Errors are JSON `{"error": "..."}` with 400, 404 or 500. A write whose
//! invalidation failed still answers with what it wrote, plus the header
//! `x-cache-invalidation: failed`; the invalidation is then retried in the
//! background (see [`users`]).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::db::{Db, User};
use super::error::AppError;
use super::retry::Retries;
use super::users::{self, UserInput, Written};

/// `hit` when the request ran no database query: the value came from the
/// cache (or from a concurrent request for the same key); `miss` otherwise.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Set to `failed` on a write whose cache invalidation failed.
pub const X_CACHE_INVALIDATION: HeaderName = HeaderName::from_static("x-cache-invalidation");

/// What the handlers share; each takes the part it needs.
#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    retries: Retries,
}

impl FromRef<AppState> for Db {
    fn from_ref(state: &AppState) -> Db {
        state.db.clone()
    }
}

impl FromRef<AppState> for Retries {
    fn from_ref(state: &AppState) -> Retries {
        state.retries.clone()
    }
}

/// The service's routes, on this database; writes queue the invalidations
/// that failed on `retries`.
pub fn router(db: Db, retries: Retries) -> Router {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).put(update_user))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .fallback(|| async { AppError::NotFound("no such route".to_owned()) })
        .with_state(AppState { db, retries })
}

async fn get_user(
    State(db): State<Db>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id?;
    let db = db.tracked();
    let user = users::get_user(&db, id)
        .await?
        .ok_or_else(|| no_such_user(id))?;
    let cache = if db.tracked_queries() == 0 {
        "hit"
    } else {
        "miss"
    };
    Ok(([(X_CACHE, HeaderValue::from_static(cache))], Json(user)).into_response())
}

async fn list_users(State(db): State<Db>) -> Result<Response, AppError> {
    Ok(Json(users::list_users(&db).await?).into_response())
}

async fn update_user(
    State(db): State<Db>,
    State(retries): State<Retries>,
    id: Result<Path<i64>, PathRejection>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id?;
    let Json(input) = input?;
    let written = users::update_user(&db, &retries, id, input)
        .await?
        .ok_or_else(|| no_such_user(id))?;
    Ok(written_response(StatusCode::OK, written))
}

async fn create_user(
    State(db): State<Db>,
    State(retries): State<Retries>,
    input: Result<Json<UserInput>, JsonRejection>,
) -> Result<Response, AppError> {
    let Json(input) = input?;
    let written = users::create_user(&db, &retries, input).await?;
    Ok(written_response(StatusCode::CREATED, written))
}

async fn health() -> Response {
    let cache = cache_runtime::health().await;
    let (status, word) = if cache.healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded")
    };
    (status, Json(json!({ "status": word, "cache": cache }))).into_response()
}

async fn stats(State(db): State<Db>) -> Response {
    Json(json!({
        "cache": cache_runtime::stats(),
        "db_queries": db.process_queries(),
    }))
    .into_response()
}

fn written_response(status: StatusCode, written: Written<User>) -> Response {
    let mut response = (status, Json(written.value)).into_response();
    if !written.invalidated {
        response
            .headers_mut()
            .insert(X_CACHE_INVALIDATION, HeaderValue::from_static("failed"));
    }
    response
}

fn no_such_user(id: i64) -> AppError {
    AppError::NotFound(format!("no user with id {id}"))
}
