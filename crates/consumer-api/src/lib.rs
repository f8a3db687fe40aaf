//! `consumer-api`: the read side of the consumer DB, compatible with the LIMS Image API's
//! read endpoints, so the consumer DB can serve as a read replica.
//!
//! # Layout
//! - [`config`]: `LEAFSYNC_*` environment → [`config::ApiConfig`].
//! - [`routes`]: the handlers; parsing of path and query at the boundary.
//! - [`error`]: [`error::ApiError`] and its single conversion into a response.
//! - [`metrics`]: request count and latency by matched route; `/metrics`.
//! - [`openapi`]: the `/openapi.json` document.
//!
//! [`app`] builds the router (tests drive it with `oneshot`); [`serve`] runs it until the
//! shutdown future resolves.

pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod routes;

use std::time::Duration;

use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::FromRef,
    middleware,
    routing::{MethodRouter, get},
};
use leafsync_core::{ImageRepository, RepoError, WritePath};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};

pub use config::ApiConfig;
use error::ApiError;
pub use metrics::ApiMetrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The consumer DB.
    pub repo: ImageRepository,
    /// Request metrics.
    pub metrics: ApiMetrics,
    /// Largest accepted `limit`.
    pub list_max_limit: u32,
    /// `limit` when none is given.
    pub list_default_limit: u32,
    /// `/ready`'s ping timeout.
    pub ready_timeout: Duration,
    /// Data requests slower than this are answered 503.
    pub request_timeout: Duration,
    /// Data requests in progress at once.
    pub max_concurrent_requests: usize,
}

impl FromRef<AppState> for ApiMetrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl AppState {
    /// State over `config`'s database. The client connects lazily: a DB that is down at
    /// start-up makes `/ready` fail, not the process.
    pub async fn connect(config: &ApiConfig) -> Result<Self, RepoError> {
        let client =
            leafsync_core::mongo::connect(&config.mongo_uri, "leafsync-consumer-api").await?;
        Ok(Self::new(
            ImageRepository::new(client, &config.mongo_db, WritePath::Auto),
            config,
        ))
    }

    /// State over an existing repository (tests use their own database).
    pub fn new(repo: ImageRepository, config: &ApiConfig) -> Self {
        Self {
            repo,
            metrics: ApiMetrics::new(),
            list_max_limit: config.list_max_limit,
            list_default_limit: config.list_default_limit,
            ready_timeout: Duration::from_millis(config.ready_timeout_ms),
            request_timeout: config.request_timeout(),
            max_concurrent_requests: config.max_concurrent_requests,
        }
    }
}

/// A route answering both `path` and `path/`, as the Image API does.
fn both<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    path: &str,
    handler: MethodRouter<S>,
) -> Router<S> {
    router
        .route(path, handler.clone())
        .route(&format!("{path}/"), handler)
}

async fn shed(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded
    } else {
        tracing::error!(error = %err, "unexpected middleware error");
        ApiError::Overloaded
    }
}

/// The whole router. Data routes are bounded (timeout, concurrency with shedding);
/// `/live`, `/ready`, `/metrics` are not, so probes keep answering under load.
pub fn app(state: AppState) -> Router {
    let (limit, timeout) = (state.max_concurrent_requests, state.request_timeout);
    let openapi = openapi::document(state.list_max_limit, state.list_default_limit);
    let mut data = Router::new();
    data = both(data, "/image-plant/{plant}", get(routes::list));
    data = both(data, "/image-plant/{plant}/total", get(routes::total));
    data = both(data, "/image-plant/{plant}/random", get(routes::random));
    data = both(data, "/image-plant/{plant}/{id}", get(routes::get_image));
    let data = data.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(shed))
            .load_shed()
            .concurrency_limit(limit)
            .timeout(timeout),
    );
    Router::new()
        .merge(data)
        .route("/live", get(routes::live))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(move || async move { Json(openapi) }))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .fallback(routes::fallback)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "consumer-api listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
