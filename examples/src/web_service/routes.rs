//! The HTTP API: routes, and handlers that turn requests into calls of
//! [`users`] and the cache's health, counters and metrics into responses.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /users/{id}` | the user (cached), or 404 (cached too); `x-cache` says what the cache did |
//! | `GET /users` | every user (cached) |
//! | `PUT /users/{id}` | updates `{name, email}`, invalidates the entry and the list |
//! | `POST /users` | creates `{name, email}` (201), invalidates the list |
//! | `GET /health` | 200 if the cache backend answers, 503 if not |
//! | `GET /stats` | the cache's counters and the database queries run, as JSON |
//! | `GET /metrics` | the cache's metrics in Prometheus's text format; 503 if they are not exported |
//!
//! `x-cache` is what [`cache_runtime::with_outcome`] reports for the call:
//!
//! | value | meaning |
//! | --- | --- |
//! | `hit` | served from the cache; no query ran |
//! | `coalesced` | handed the value of a concurrent request for the same user, whose query served both |
//! | `miss` | not cached: the query ran, and its answer was stored (unless it failed, or a write invalidated it meanwhile) |
//! | `uncached` | the cache could not take part (backend down, circuit open): the query ran, nothing stored |
//!
//! (`refreshed` and `bypassed` exist too, for calls made through
//! [`cache_runtime::refresh`] and [`cache_runtime::uncached`]; this API
//! makes none.)
//!
//! Errors are JSON `{"error": "..."}` with 400, 404, 500 or 503. A write whose
//! invalidation failed still answers with what it wrote, plus the header
//! `x-cache-invalidation: failed`; the invalidation is then retried in the
//! background (see [`users`]).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::db::{Db, User};
use super::error::AppError;
use super::metrics::{self, MetricsExporter};
use super::retry::Retries;
use super::users::{self, UserInput, Written};

/// What the cache did for a `GET /users/{id}`: `hit`, `coalesced`, `miss`,
/// `uncached` (see the module docs).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Set to `failed` on a write whose cache invalidation failed.
pub const X_CACHE_INVALIDATION: HeaderName = HeaderName::from_static("x-cache-invalidation");

/// What the handlers share; each takes the part it needs.
#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    retries: Retries,
    metrics: MetricsExporter,
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

impl FromRef<AppState> for MetricsExporter {
    fn from_ref(state: &AppState) -> MetricsExporter {
        state.metrics.clone()
    }
}

/// The service's routes, on this database; writes queue the invalidations
/// that failed on `retries`, and `GET /metrics` renders `metrics`.
pub fn router(db: Db, retries: Retries, metrics: MetricsExporter) -> Router {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).put(update_user))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { AppError::NotFound("no such route".to_owned()) })
        .with_state(AppState {
            db,
            retries,
            metrics,
        })
}

async fn get_user(
    State(db): State<Db>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, AppError> {
    let Path(id) = id?;
    let (user, outcome) = cache_runtime::with_outcome(users::get_user(&db, id)).await;
    // Every answer of the call carries the header: a cached "no such user"
    // is a hit too, and a failed query says whether it was a miss or ran
    // uncached.
    let mut response = match user {
        Ok(Some(user)) => Json(user).into_response(),
        Ok(None) => no_such_user(id).into_response(),
        Err(error) => error.into_response(),
    };
    // `None` only if the call made no cached call, which `users::get_user`
    // always does; no header then, rather than a guess.
    if let Some(outcome) = outcome {
        // `as_str` is a fixed lower-case word per outcome: a valid header value.
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(outcome.as_str()));
    }
    Ok(response)
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

async fn render_metrics(State(exporter): State<MetricsExporter>) -> Result<Response, AppError> {
    let text = exporter.render().ok_or_else(|| {
        AppError::Unavailable(
            "metrics are not exported: the Prometheus recorder could not be installed (see the service's log)"
                .to_owned(),
        )
    })?;
    let content_type = HeaderValue::from_static(metrics::CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::web_service::retry;

    /// GETs `path` from `router`, served on a local port: the raw response.
    async fn get(router: Router, path: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let addr = listener.local_addr().expect("the port's address");
        let server = tokio::spawn(axum::serve(listener, router).into_future());
        let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let response = tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).expect("connects");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("a read timeout");
            stream.write_all(request.as_bytes()).expect("sends");
            let mut response = String::new();
            stream.read_to_string(&mut response).expect("reads");
            response
        })
        .await
        .expect("the client thread");
        server.abort();
        response
    }

    #[tokio::test]
    async fn metrics_answer_503_when_the_recorder_is_not_installed() {
        let db = Db::open(None).await.expect("an in-memory database");
        let (retries, _worker) = retry::start();
        let router = router(db, retries, MetricsExporter::disabled());
        let response = get(router, "/metrics").await;
        assert!(
            response.starts_with("HTTP/1.1 503"),
            "GET /metrics without a recorder: {response}"
        );
        assert!(
            response.contains(r#"{"error":"metrics are not exported"#),
            "a 503 says why, as JSON: {response}"
        );
    }
}
