//! The job's Prometheus metrics and the small HTTP server that exposes them (`/metrics`)
//! next to a liveness probe (`/live`) and a readiness probe (`/ready`). Labels are
//! low-cardinality: plant, outcome, reason, topic/partition — never an image id.

use std::net::SocketAddr;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tokio::net::TcpListener;

use crate::dlq::DeadLetterReason;
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
    /// Wall time of one batch's writes to MongoDB, retries included.
    pub write_duration: Histogram,
    /// Wall time of one offset commit (they run beside the writes, not between them).
    pub commit_duration: Histogram,
    /// Records per batch.
    pub batch_size: Histogram,
    /// now − the event's `updated_at` (else `created_at`) when it is applied, by plant.
    pub end_to_end_lag: HistogramVec,
    /// Messages between the committed offset and the end of each owned partition.
    pub consumer_lag: IntGaugeVec,
    /// Partitions this replica owns after the last rebalance.
    pub assigned_partitions: IntGauge,
    /// 1 while the job holds the stream, by reason: `index` (the unique index on `id`
    /// cannot be built: duplicate ids, see `dedupe`), `mongo-unavailable` (MongoDB has not
    /// answered for several retries in a row), `mongo-refused` (MongoDB refuses
    /// writes for a reason that is not a document's), `write-concern` (the deployment
    /// cannot satisfy the write concern), `dead-letter-send` (the dead-letter topic does
    /// not take records), `dead-letter-breaker` (too many dead letters). `/ready` answers
    /// 503 while any is 1.
    pub stalled: IntGaugeVec,
}

/// Registers `metric` in `registry` and hands it back.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels);
    register(registry, metric.expect("valid metric definition"))
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels);
    register(registry, metric.expect("valid metric definition"))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets));
    register(registry, metric.expect("valid metric definition"))
}

/// The counters, in [`JobMetrics`]'s field order: name, help, labels.
const COUNTERS: [(&str, &str, &[&str]); 7] = [
    (
        "leafsync_job_events_consumed_total",
        "Records received from Kafka.",
        &["plant"],
    ),
    (
        "leafsync_job_images_total",
        "Images written, by outcome.",
        &["plant", "outcome"],
    ),
    (
        "leafsync_job_bytes_processed_total",
        "Bytes of record values processed.",
        &["plant"],
    ),
    (
        "leafsync_job_dead_lettered_total",
        "Records sent to the dead-letter topic.",
        &["reason"],
    ),
    (
        "leafsync_job_tombstones_skipped_total",
        "Tombstones skipped by policy.",
        &["plant"],
    ),
    (
        "leafsync_job_retries_total",
        "Retries of transient faults.",
        &["operation"],
    ),
    ("leafsync_job_commits_total", "Offset commits.", &["result"]),
];
const STALLED: (&str, &str) = (
    "leafsync_job_stalled",
    "1 while the job holds the stream for this reason (nothing is skipped or committed past it).",
);
const END_TO_END_LAG: (&str, &str) = (
    "leafsync_job_end_to_end_lag_seconds",
    "Age of an event (now - updated_at, else created_at) when it reaches the consumer DB.",
);
const LAG_BUCKETS: [f64; 15] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0,
];
const WRITE_DURATION: (&str, &str) = (
    "leafsync_job_write_duration_seconds",
    "Time a batch spends writing to MongoDB, retries included.",
);
const COMMIT_DURATION: (&str, &str) = (
    "leafsync_job_commit_duration_seconds",
    "Time one offset commit takes (commits run beside the writes).",
);
const BATCH_DURATION: (&str, &str) = (
    "leafsync_job_batch_duration_seconds",
    "Time from a batch's first record to its committed offsets.",
);
const BATCH_SIZE: (&str, &str) = ("leafsync_job_batch_size", "Records per batch.");
const CONSUMER_LAG: (&str, &str) = (
    "leafsync_job_consumer_lag",
    "Messages between the committed offset and the partition's end.",
);
const ASSIGNED: (&str, &str) = (
    "leafsync_job_assigned_partitions",
    "Partitions this replica owns after the last rebalance.",
);

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl JobMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let [
            events_consumed,
            images,
            bytes_processed,
            dead_lettered,
            tombstones_skipped,
            retries,
            commits,
        ] = COUNTERS.map(|(name, help, labels)| counter(r, name, help, labels));
        let stalled = gauges(r, STALLED.0, STALLED.1, &["reason"]);
        for reason in STALL_REASONS {
            stalled.with_label_values(&[reason]).set(0);
        }
        // Every reason from the start, so `increase()` sees a reason's first dead letter.
        for reason in DeadLetterReason::ALL {
            dead_lettered.with_label_values(&[reason.as_str()]).reset();
        }
        let end_to_end_lag = HistogramVec::new(
            HistogramOpts::new(END_TO_END_LAG.0, END_TO_END_LAG.1).buckets(LAG_BUCKETS.to_vec()),
            &["plant"],
        );
        let exponential = |start, count| {
            prometheus::exponential_buckets(start, 2.0, count).expect("valid buckets")
        };
        Self {
            events_consumed,
            images,
            bytes_processed,
            dead_lettered,
            tombstones_skipped,
            retries,
            commits,
            batch_duration: histogram(
                r,
                BATCH_DURATION.0,
                BATCH_DURATION.1,
                exponential(0.001, 16),
            ),
            write_duration: histogram(
                r,
                WRITE_DURATION.0,
                WRITE_DURATION.1,
                exponential(0.001, 16),
            ),
            commit_duration: histogram(
                r,
                COMMIT_DURATION.0,
                COMMIT_DURATION.1,
                exponential(0.001, 16),
            ),
            batch_size: histogram(r, BATCH_SIZE.0, BATCH_SIZE.1, exponential(1.0, 12)),
            end_to_end_lag: register(r, end_to_end_lag.expect("valid metric definition")),
            consumer_lag: gauges(r, CONSUMER_LAG.0, CONSUMER_LAG.1, &["topic", "partition"]),
            assigned_partitions: register(
                r,
                IntGauge::new(ASSIGNED.0, ASSIGNED.1).expect("valid metric definition"),
            ),
            stalled,
            registry,
        }
    }

    /// The reasons the job holds the stream now (empty: ready).
    pub fn stall_reasons(&self) -> Vec<&'static str> {
        STALL_REASONS
            .into_iter()
            .filter(|r| self.stalled.with_label_values(&[r]).get() != 0)
            .collect()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        leafsync_core::metrics::render(&self.registry)
    }
}

/// Why the job may hold the stream (the `reason` label of `leafsync_job_stalled`).
pub const STALL_REASONS: [&str; 6] = [
    "index",
    "mongo-unavailable",
    "mongo-refused",
    "write-concern",
    "dead-letter-send",
    "dead-letter-breaker",
];

/// `/metrics`, `/live` (the process answers) and `/ready` (503 while the job holds the
/// stream, with the reasons) over `metrics`.
pub fn router(metrics: JobMetrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/live", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .with_state(metrics)
}

async fn ready(State(metrics): State<JobMetrics>) -> impl IntoResponse {
    let reasons = metrics.stall_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: {}", reasons.join(", ")),
        )
    }
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
