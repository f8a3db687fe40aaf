//! Every way a request can fail, and the one place that turns it into a response: a JSON
//! body `{"detail": …, "error": …}` (FastAPI's `detail`, as the Image API answers), 4xx
//! for what the client sent, 503 for an unavailable DB (logged once, internals not shown).

use axum::{
    Json,
    extract::rejection::{PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use leafsync_core::{ImageId, InvalidImageId, PlantType, RepoError, UnknownPlant};
use serde_json::json;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The `{type}` path segment is not a plant.
    #[error(transparent)]
    UnknownPlant(#[from] UnknownPlant),
    /// The `{id}` path segment is not a non-negative integer.
    #[error(transparent)]
    InvalidId(#[from] InvalidImageId),
    /// A query parameter has a value it cannot take.
    #[error("query parameter {name:?} {problem}, got {value:?}")]
    InvalidQuery {
        /// The parameter.
        name: &'static str,
        /// What it must be.
        problem: String,
        /// What came.
        value: String,
    },
    /// No image with that id.
    #[error("{plant} image {id} not found")]
    NotFound {
        /// The plant.
        plant: PlantType,
        /// The id asked for.
        id: ImageId,
    },
    /// `random` found no image matching the filters.
    #[error("no {0} image matches the filters")]
    NoMatch(PlantType),
    /// The path or query string could not be read at all (not UTF-8 once decoded, say):
    /// axum's own rejection, answered in our JSON shape.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// No route for this path.
    #[error("no such endpoint")]
    NoRoute,
    /// MongoDB failed or is unreachable.
    #[error("database unavailable")]
    Database(#[from] RepoError),
    /// The request took longer than the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// Too many requests in progress.
    #[error("server busy, retry later")]
    Overloaded,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::UnknownPlant(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown-plant"),
            ApiError::InvalidId(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-id"),
            ApiError::InvalidQuery { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid-query"),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::NoMatch(_) => (StatusCode::NOT_FOUND, "no-match"),
            ApiError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed-request"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no-route"),
            ApiError::Database(_) => (StatusCode::SERVICE_UNAVAILABLE, "database-unavailable"),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Malformed(truncate(&rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Malformed(truncate(&rejection.body_text()))
    }
}

/// What a client sent is echoed back at most this long.
fn truncate(text: &str) -> String {
    text.chars().take(160).collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Database(e) = &self {
            // The only place a DB error is logged; the client sees a generic message.
            tracing::error!(error = %e, "database error");
        }
        (
            status,
            Json(json!({ "detail": self.to_string(), "error": code })),
        )
            .into_response()
    }
}
