//! The job's Prometheus metrics and the small HTTP server that exposes them (`/metrics`)
//! next to a liveness probe (`/live`). Labels are low-cardinality: plant, outcome, reason,
//! topic/partition — never an image id.

use std::net::SocketAddr;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every metric the job records, registered in its own registry.
#[derive(Clone)]
pub struct JobMetrics {
    registry: Registry,
    /// Records received, by plant.
    pub events_consumed: IntCounterVec,
    /// Applied changes by plant and outcome (inserted, updated, unchanged, stale).
    pub images: IntCounterVec,
    /// Bytes of record values processed, by plant.
    pub bytes_processed: IntCounterVec,
    /// Records sent to the dead-letter topic, by reason.
    pub dead_lettered: IntCounterVec,
    /// Tombstones skipped under `LEAFSYNC_TOMBSTONE_POLICY=skip`.
    pub tombstones_skipped: IntCounterVec,
    /// Retries of transient faults, by operation (mongo, dead-letter, commit, startup).
    pub retries: IntCounterVec,
    /// Offset commits by result (ok, error).
    pub commits: IntCounterVec,
    /// Wall time of one batch from first record to committed offsets.
    pub batch_duration: Histogram,
    /// Records per batch.
    pub batch_size: Histogram,
    /// now − the event's `updated_at` (else `created_at`) when it is applied, by plant.
    pub end_to_end_lag: HistogramVec,
    /// Messages between the committed offset and the end of each owned partition.
    pub consumer_lag: IntGaugeVec,
    /// Partitions this replica owns after the last rebalance.
    pub assigned_partitions: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl JobMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let batch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "leafsync_job_batch_duration_seconds",
                "Time from a batch's first record to its committed offsets.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric definition");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("leafsync_job_batch_size", "Records per batch.")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
        )
        .expect("valid metric definition");
        let end_to_end_lag = HistogramVec::new(
            HistogramOpts::new(
                "leafsync_job_end_to_end_lag_seconds",
                "Age of an event (now - updated_at, else created_at) when it reaches the consumer DB.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            &["plant"],
        )
        .expect("valid metric definition");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "leafsync_job_consumer_lag",
                "Messages between the committed offset and the partition's end.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric definition");
        let assigned_partitions = IntGauge::new(
            "leafsync_job_assigned_partitions",
            "Partitions this replica owns after the last rebalance.",
        )
        .expect("valid metric definition");
        for m in [
            Box::new(assigned_partitions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(batch_duration.clone()),
            Box::new(batch_size.clone()),
            Box::new(end_to_end_lag.clone()),
            Box::new(consumer_lag.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            events_consumed: counter(
                &registry,
                "leafsync_job_events_consumed_total",
                "Records received from Kafka.",
                &["plant"],
            ),
            images: counter(
                &registry,
                "leafsync_job_images_total",
                "Images written, by outcome.",
                &["plant", "outcome"],
            ),
            bytes_processed: counter(
                &registry,
                "leafsync_job_bytes_processed_total",
                "Bytes of record values processed.",
                &["plant"],
            ),
            dead_lettered: counter(
                &registry,
                "leafsync_job_dead_lettered_total",
                "Records sent to the dead-letter topic.",
                &["reason"],
            ),
            tombstones_skipped: counter(
                &registry,
                "leafsync_job_tombstones_skipped_total",
                "Tombstones skipped by policy.",
                &["plant"],
            ),
            retries: counter(
                &registry,
                "leafsync_job_retries_total",
                "Retries of transient faults.",
                &["operation"],
            ),
            commits: counter(
                &registry,
                "leafsync_job_commits_total",
                "Offset commits.",
                &["result"],
            ),
            batch_duration,
            batch_size,
            end_to_end_lag,
            consumer_lag,
            assigned_partitions,
            registry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        leafsync_core::metrics::render(&self.registry)
    }
}

/// `/metrics` and `/live` over `metrics`.
pub fn router(metrics: JobMetrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/live", get(|| async { "ok" }))
        .with_state(metrics)
}

async fn render(State(metrics): State<JobMetrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, leafsync_core::metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// Serves [`router`] on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: JobMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "metrics endpoint listening");
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
