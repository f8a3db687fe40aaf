//! LIMS's Db Synchronizer Job, re-implemented for the batch-vs-stream comparison: every
//! interval (and once at start), page through the producer DB in batches of 50 and copy
//! each image that is new, or newer (`updated_at`) than its copy, into a consumer DB.
//!
//! It exposes the original gauges, images and bytes copied by the last run, labelled by
//! plant only (the original's `id` label made one series per image), plus cumulative
//! counters so transferred volume can be compared over time with the stream's.

use std::time::Duration;

use futures::TryStreamExt;
use leafsync_core::PlantType;
use mongodb::{
    Database,
    bson::{Bson, Document, doc},
    options::FindOptions,
};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

/// The Db Synchronizer's page size.
pub const PAGE: i64 = 50;

/// The synchronizer's metrics.
#[derive(Clone)]
pub struct SyncMetrics {
    /// Its registry (served at `/metrics`).
    pub registry: Registry,
    /// `db_synchronizer_job_image{service,plant}`: images copied by the last run.
    pub image: IntGaugeVec,
    /// `db_synchronizer_job_image_size{service,plant}`: bytes copied by the last run.
    pub image_size: IntGaugeVec,
    /// Images copied since start.
    pub images_total: IntCounterVec,
    /// Bytes copied since start.
    pub bytes_total: IntCounterVec,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let labels = ["service", "plant"];
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        Self {
            image: gauge(
                "db_synchronizer_job_image",
                "Images copied by the last run.",
            ),
            image_size: gauge(
                "db_synchronizer_job_image_size",
                "Bytes copied by the last run.",
            ),
            images_total: counter(
                "db_synchronizer_job_images_total",
                "Images copied since start.",
            ),
            bytes_total: counter(
                "db_synchronizer_job_bytes_total",
                "Bytes copied since start.",
            ),
            registry,
        }
    }
}

/// Images and bytes one run copied, by plant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// `(plant, images, bytes)`.
    pub copied: Vec<(PlantType, u64, u64)>,
}

impl RunReport {
    /// Images copied, all plants.
    pub fn images(&self) -> u64 {
        self.copied.iter().map(|(_, n, _)| n).sum()
    }
}

/// Whether the producer's copy must replace the consumer's: it is missing, or the
/// producer's `updated_at` is later than the consumer's (null counts as never updated).
fn needs_copy(producer: &Document, consumer: Option<&Document>) -> bool {
    let Some(consumer) = consumer else {
        return true;
    };
    match (producer.get("updated_at"), consumer.get("updated_at")) {
        (Some(Bson::DateTime(p)), Some(Bson::DateTime(c))) => p > c,
        (Some(Bson::DateTime(_)), _) => true,
        _ => false,
    }
}

/// One synchronization run over every plant.
pub async fn run_once(
    producer: &Database,
    consumer: &Database,
    metrics: &SyncMetrics,
) -> mongodb::error::Result<RunReport> {
    let mut report = RunReport::default();
    for plant in PlantType::ALL {
        let (source, target) = (
            producer.collection::<Document>(plant.collection()),
            consumer.collection::<Document>(plant.collection()),
        );
        let (mut images, mut bytes, mut after) = (0_u64, 0_u64, i64::MIN);
        loop {
            let options = FindOptions::builder()
                .sort(doc! { "id": 1 })
                .limit(PAGE)
                .build();
            let page: Vec<Document> = source
                .find(doc! { "id": { "$gt": after } })
                .with_options(options)
                .projection(doc! { "_id": 0 })
                .await?
                .try_collect()
                .await?;
            let Some(last) = page.last() else { break };
            let Some(last_id) = crate::verify::id_of(last) else {
                break;
            };
            after = last_id;
            for image in &page {
                let id = image.get("id").cloned().unwrap_or(Bson::Null);
                let existing = target
                    .find_one(doc! { "id": id.clone() })
                    .projection(doc! { "updated_at": 1 })
                    .await?;
                if needs_copy(image, existing.as_ref()) {
                    target
                        .replace_one(doc! { "id": id }, image.clone())
                        .upsert(true)
                        .await?;
                    images += 1;
                    bytes += u64::try_from(mongodb::bson::to_vec(image).map_or(0, |v| v.len()))
                        .unwrap_or(0);
                }
            }
            if i64::try_from(page.len()).unwrap_or(0) < PAGE {
                break;
            }
        }
        let labels = ["db-synchronizer", plant.as_str()];
        metrics
            .image
            .with_label_values(&labels)
            .set(i64::try_from(images).unwrap_or(i64::MAX));
        metrics
            .image_size
            .with_label_values(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        metrics
            .images_total
            .with_label_values(&labels)
            .inc_by(images);
        metrics.bytes_total.with_label_values(&labels).inc_by(bytes);
        report.copied.push((plant, images, bytes));
    }
    Ok(report)
}

/// Runs at once, then every `interval`, until `shutdown`.
pub async fn run(
    producer: &Database,
    consumer: &Database,
    metrics: &SyncMetrics,
    interval: Duration,
    shutdown: CancellationToken,
) -> mongodb::error::Result<()> {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let report = run_once(producer, consumer, metrics).await?;
        tracing::info!(images = report.images(), copied = ?report.copied, "batch synchronization run");
    }
}

/// [`run`], with the metrics served at `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    producer: &Database,
    consumer: &Database,
    metrics: &SyncMetrics,
    interval: Duration,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = metrics.registry.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { leafsync_core::metrics::render(&registry) }
        }),
    );
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    let result = run(producer, consumer, metrics, interval, shutdown.clone()).await;
    shutdown.cancel();
    server.await??;
    Ok(result?)
}
