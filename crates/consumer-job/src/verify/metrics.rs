//! The verifier's Prometheus metrics and its `/metrics`, `/live`, `/ready` server. One
//! `plant` label (the route's label: potato, tomato, pepper), and `kind` for drift;
//! every series of a plant exists from the start (drift of every kind at 0), so alerts
//! and `increase()` see the first change.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Drift, Kind};

/// Every metric the verifier records, in its own registry.
#[derive(Clone)]
pub struct VerifyMetrics {
    registry: Registry,
    /// Images compared (producer and consumer side of one id), by plant.
    pub checked: IntCounterVec,
    /// Drift found in the last complete pass, by plant and kind.
    pub drift: IntGaugeVec,
    /// Wall time of the last complete pass, by plant.
    pub pass_duration: GaugeVec,
    /// Unix time the last complete pass ended, by plant.
    pub last_pass: GaugeVec,
    /// Images repaired (`--repair`), by plant.
    pub repaired: IntCounterVec,
    /// Images skipped as in flight in the last complete pass, by plant.
    pub in_flight: IntGaugeVec,
    ready: Arc<AtomicBool>,
    passes: Arc<Mutex<HashMap<String, u64>>>,
}

impl Default for VerifyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl VerifyMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let checked = IntCounterVec::new(
            opts(
                "leafsync_verify_images_checked_total",
                "Images compared between the producer and the consumer DB.",
            ),
            &["plant"],
        );
        let drift = IntGaugeVec::new(
            opts(
                "leafsync_verify_drift",
                "Images that differ and are settled (not in flight), found in the last complete pass, by kind.",
            ),
            &["plant", "kind"],
        );
        let pass_duration = GaugeVec::new(
            opts(
                "leafsync_verify_pass_duration_seconds",
                "Wall time of the last complete verification pass.",
            ),
            &["plant"],
        );
        let last_pass = GaugeVec::new(
            opts(
                "leafsync_verify_last_pass_timestamp_seconds",
                "Unix time the last complete verification pass ended.",
            ),
            &["plant"],
        );
        let repaired = IntCounterVec::new(
            opts(
                "leafsync_verify_repaired_total",
                "Images the verifier repaired (--repair).",
            ),
            &["plant"],
        );
        let in_flight = IntGaugeVec::new(
            opts(
                "leafsync_verify_in_flight",
                "Images that differed but were in flight (changed within the settle time) in the last complete pass.",
            ),
            &["plant"],
        );
        let metrics = Self {
            checked: checked.expect("valid metric definition"),
            drift: drift.expect("valid metric definition"),
            pass_duration: pass_duration.expect("valid metric definition"),
            last_pass: last_pass.expect("valid metric definition"),
            repaired: repaired.expect("valid metric definition"),
            in_flight: in_flight.expect("valid metric definition"),
            ready: Arc::new(AtomicBool::new(false)),
            passes: Arc::default(),
            registry,
        };
        let r = &metrics.registry;
        let registered = [
            r.register(Box::new(metrics.checked.clone())),
            r.register(Box::new(metrics.drift.clone())),
            r.register(Box::new(metrics.pass_duration.clone())),
            r.register(Box::new(metrics.last_pass.clone())),
            r.register(Box::new(metrics.repaired.clone())),
            r.register(Box::new(metrics.in_flight.clone())),
        ];
        for result in registered {
            result.expect("metric names are unique");
        }
        metrics
    }

    /// Creates every series of `plant` (drift of each kind at 0).
    pub fn plant(&self, plant: &str) {
        self.checked.with_label_values(&[plant]).reset();
        self.repaired.with_label_values(&[plant]).reset();
        self.in_flight.with_label_values(&[plant]).set(0);
        self.pass_duration.with_label_values(&[plant]).set(0.0);
        self.last_pass.with_label_values(&[plant]).set(0.0);
        for kind in Kind::ALL {
            self.drift.with_label_values(&[plant, kind.as_str()]).set(0);
        }
    }

    /// A pass of `plant` is complete: its drift, in-flight count and duration.
    pub fn pass_complete(&self, plant: &str, drift: &Drift, in_flight: u64, took: Duration) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for kind in Kind::ALL {
            self.drift
                .with_label_values(&[plant, kind.as_str()])
                .set(gauge(drift.get(kind)));
        }
        self.in_flight
            .with_label_values(&[plant])
            .set(gauge(in_flight));
        self.pass_duration
            .with_label_values(&[plant])
            .set(took.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_pass
            .with_label_values(&[plant])
            .set(now.as_secs_f64());
        *self
            .passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(plant.to_owned())
            .or_default() += 1;
    }

    /// Passes of `plant` this process completed (not exported: for tests and logs).
    pub fn completed_passes(&self, plant: &str) -> u64 {
        self.passes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plant)
            .copied()
            .unwrap_or(0)
    }

    /// Sets readiness: connected and a page read (true), or a read failed (false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        leafsync_core::metrics::render(&self.registry)
    }
}

/// `/metrics`, `/live` (the process answers) and `/ready` (200 once connected and the
/// first page of a pass was read, 503 before and after a failed read).
pub fn router(metrics: VerifyMetrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(metrics)
}

async fn ready(State(metrics): State<VerifyMetrics>) -> impl IntoResponse {
    if metrics.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not verifying yet")
    }
}

async fn render(State(metrics): State<VerifyMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, leafsync_core::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// Serves [`router`] on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: VerifyMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "verifier metrics endpoint listening");
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
