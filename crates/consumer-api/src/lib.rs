//! `consumer-api`: the read side of the consumer DB, compatible with the LIMS Image API's
//! read endpoints, so the consumer DB can serve as a read replica.
//!
//! # Layout
//! - [`config`]: `LEAFSYNC_*` environment → [`config::ApiConfig`].
//! - [`routes`]: the handlers; parsing of path and query at the boundary.
//! - [`error`]: [`error::ApiError`] and its single conversion into a response.
//! - [`extract`]: `Path`/`Query` whose rejections are `ApiError`s.
//! - [`budget`]: response bytes in flight, bounded in total.
//! - [`listener`]: the connection cap, the write and idle timeouts.
//! - [`server`]: HTTP/1.1 with a header-read timeout, and the probe listener beside it.
//! - [`metrics`]: request count and latency by matched route; `/metrics`.
//! - [`openapi`]: the `/openapi.json` document.
//!
//! [`app`] builds the router (tests drive it with `oneshot`); [`serve`] runs it, and
//! [`probe_app`] on a listener of its own, until the shutdown future resolves.

pub mod budget;
pub mod config;
pub mod error;
pub mod extract;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;

use std::{future::Future, time::Duration};

use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::FromRef,
    middleware,
    routing::{MethodRouter, get},
};
use budget::ResponseBudget;
use leafsync_core::{ImageRepository, RepoError, WritePath};
use listener::BoundedListener;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};

pub use config::ApiConfig;
use error::ApiError;
pub use metrics::ApiMetrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The consumer DB, for data requests.
    pub repo: ImageRepository,
    /// The consumer DB through a pool of its own, for `/ready`: requests queueing for
    /// `repo`'s pool cannot make every replica unready at once.
    pub ready: ImageRepository,
    /// Response bytes held at once.
    pub budget: ResponseBudget,
    /// Largest list page body.
    pub page_max_bytes: usize,
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
    /// State over `config`'s database. The clients connect lazily: a DB that is down at
    /// start-up makes `/ready` fail, not the process. Readiness gets a one-connection
    /// pool of its own.
    pub async fn connect(config: &ApiConfig) -> Result<Self, RepoError> {
        let uri = &config.mongo_uri;
        let client = leafsync_core::mongo::connect(uri, "leafsync-consumer-api").await?;
        let probe =
            leafsync_core::mongo::connect_pool(uri, "leafsync-consumer-api-ready", 1).await?;
        let repo = ImageRepository::new(client, &config.mongo_db, WritePath::Auto);
        let ready = ImageRepository::new(probe, &config.mongo_db, WritePath::Auto);
        Ok(Self::with_probe(repo, ready, config))
    }

    /// State over an existing repository (tests use their own database); readiness
    /// shares its pool.
    pub fn new(repo: ImageRepository, config: &ApiConfig) -> Self {
        Self::with_probe(repo.clone(), repo, config)
    }

    fn with_probe(repo: ImageRepository, ready: ImageRepository, config: &ApiConfig) -> Self {
        let metrics = ApiMetrics::new();
        Self {
            repo: repo.with_read_time_limit(config.request_timeout()),
            ready,
            budget: ResponseBudget::new(config.max_response_bytes, metrics.response_bytes.clone()),
            page_max_bytes: config.page_max_bytes,
            metrics,
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

/// The probe listener's router: `/live`, `/ready` and `/metrics`, nothing else. Its
/// answers are counted like the API's: the kubelet's `/ready` answers feed the
/// not-ready alerts.
pub fn probe_app(state: AppState) -> Router {
    Router::new()
        .route("/live", get(routes::live))
        .route("/ready", get(routes::ready))
        .route("/metrics", get(metrics::render))
        .route_layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Connections the probe listener takes at once (the kubelet and Prometheus need a few).
const PROBE_CONNECTIONS: usize = 64;

/// Serves `state`'s router on `listener`, and [`probe_app`] on `probes`, until `shutdown`
/// resolves, then finishes open requests. Connections are capped, and stalled writes,
/// slow request heads and idle connections time out (see [`listener`] and [`server`]).
pub async fn serve(
    listener: TcpListener,
    probes: TcpListener,
    state: AppState,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        probes = ?probes.local_addr().ok(),
        "consumer-api listening"
    );
    let api = BoundedListener::new(
        listener,
        config.max_connections,
        config.write_timeout(),
        config.idle_timeout(),
        state.metrics.open_connections.clone(),
    );
    let probe_connections =
        prometheus::IntGauge::new("probe_connections", "unexported").expect("a valid gauge");
    let probes = BoundedListener::new(
        probes,
        PROBE_CONNECTIONS,
        config.write_timeout(),
        config.idle_timeout(),
        probe_connections,
    );
    let timeouts = server::Timeouts {
        header_read: config.header_read_timeout(),
    };
    server::serve_both(
        (api, app(state.clone())),
        (probes, probe_app(state)),
        timeouts,
        shutdown,
    )
    .await;
    Ok(())
}
