//! The consume → write → commit loop, as two stages that run side by side.
//!
//! The fetch stage takes records as they arrive, decides each one's fate
//! ([`crate::decode::decide`]) and gathers them into a [`batch::Batch`]. The write stage
//! asks for a batch whenever it is free and gets everything gathered so far: one record
//! when idle (written at once, no timer), more under load, up to the batch bounds. While
//! it writes, the fetch stage goes on fetching and decoding the next batch.
//!
//! The write stage applies all upserts of a batch as one bulk, dead-letters what cannot be
//! applied, then stores and commits the offsets ([`commit`]). Batches are written and
//! committed one at a time, in order, so offsets move only after every earlier record
//! reached Mongo or the dead-letter topic: a crash anywhere replays (harmless: writes are
//! idempotent and order-safe) and never skips.
//!
//! Transient faults (Mongo down, broker down, commit errors) are retried with jittered
//! backoff. On shutdown both stages stop taking work; the in-flight batch may finish within
//! the drain bound, else it is abandoned uncommitted; then the job commits and leaves the
//! group.

mod batch;
mod breaker;
mod commit;
mod hold;
mod write;

pub use batch::{Batch, Bounds, Record};
pub use breaker::Breaker;
pub use commit::next_offsets;

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use leafsync_core::{ImageRepository, RepoError, mongo};
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::Message,
    producer::{FutureProducer, Producer},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{CLOSE_BOUND, ConfigError, FINAL_COMMIT_BOUND, Settings},
    decode::{self, Decision},
    kafka::{self, JobContext},
    metrics::JobMetrics,
    retry::{Gave, retry},
};

/// Errors that stop the job (start-up only: once running, faults are retried).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A Kafka client could not be created or could not subscribe.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The Mongo client could not be created, or the index could not be made for good.
    #[error("mongodb: {0}")]
    Mongo(#[from] RepoError),
}

/// The batch was abandoned at the drain deadline; nothing of it was committed.
#[derive(Debug)]
struct Abandoned;

/// A configured, connected job, ready to [`Job::run`].
pub struct Job {
    settings: Settings,
    consumer: Arc<StreamConsumer<JobContext>>,
    producer: FutureProducer,
    repo: ImageRepository,
    metrics: JobMetrics,
}

impl Job {
    /// Creates the clients. Nothing is contacted yet except to parse the Mongo URI.
    pub async fn build(settings: Settings, metrics: JobMetrics) -> Result<Self, JobError> {
        let mongo = &settings.mongo;
        let client = mongo::connect(&mongo.uri, "leafsync-consumer-job")
            .await
            .map_err(RepoError::from)?;
        let repo = ImageRepository::new(client, &mongo.db, mongo.write_path);
        let consumer = Arc::new(kafka::consumer(&settings.kafka, metrics.clone())?);
        let producer = kafka::producer(&settings.kafka.brokers, settings.limits.max_event_bytes)?;
        Ok(Self {
            settings,
            consumer,
            producer,
            repo,
            metrics,
        })
    }

    /// Runs until `shutdown` fires, then drains (bounded by `drain_timeout_ms`), commits,
    /// leaves the consumer group and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), JobError> {
        let abandon = CancellationToken::new();
        let drain_clock = tokio::spawn({
            let (shutdown, abandon, bound) = (
                shutdown.clone(),
                abandon.clone(),
                self.settings.drain_timeout,
            );
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(bound).await;
                abandon.cancel();
            }
        });

        let collections = self.settings.routes.collections();
        // Without the unique index the stale guard cannot work, so nothing is consumed
        // before it exists. A permanent cause (duplicate ids, a non-unique index, no rights)
        // holds the job unready with an error that says what to do, instead of a crash
        // loop: `dedupe --apply` can run in the same pod, and the job goes on by itself.
        let mut holding = hold::Holding::new(&self.metrics.stalled);
        let indexed = retry(
            self.settings.backoff,
            &shutdown,
            || self.repo.ensure_indexes(&collections),
            |_: &RepoError| true,
            |e, attempt, delay| {
                if let Some(hold) = e.hold() {
                    holding.enter(hold.as_str(), e);
                }
                self.retrying("startup", e, attempt, delay);
            },
        )
        .await;
        drop(holding);
        match indexed {
            Ok(()) => {}
            Err(Gave::Abandoned) => return Ok(()),
            Err(Gave::Up(e)) => return Err(e.into()),
        }
        let settings = &self.settings;
        kafka::ensure_topic(&settings.kafka.brokers, &settings.dlq_topic, 1).await;
        let topics = settings.routes.topics();
        self.consumer.subscribe(&topics)?;
        tracing::info!(?topics, group = %settings.kafka.group_id, "consuming");

        let (requests, asks) = mpsc::channel(1);
        tokio::join!(
            self.fetch_stage(asks, &shutdown),
            self.write_stage(requests, &shutdown, &abandon)
        );

        drain_clock.abort();
        self.shut_down().await;
        Ok(())
    }

    /// Gathers records until the write stage asks, then hands over what it has (after
    /// taking whatever else is ready, without waiting). Stops at shutdown; a batch it
    /// still holds then was never written, so its offsets were never committed.
    async fn fetch_stage(
        &self,
        mut asks: mpsc::Receiver<oneshot::Sender<Batch>>,
        shutdown: &CancellationToken,
    ) {
        let bounds = self.settings.bounds;
        let mut batch = Batch::default();
        let mut asked: Option<oneshot::Sender<Batch>> = None;
        loop {
            if !batch.is_empty() {
                if let Some(reply) = asked.take() {
                    while !batch.is_full(bounds) {
                        match self.consumer.recv().now_or_never() {
                            Some(received) => self.take(&mut batch, received).await,
                            None => break,
                        }
                    }
                    if reply.send(std::mem::take(&mut batch)).is_err() {
                        return;
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ask = asks.recv(), if asked.is_none() => match ask {
                    Some(reply) => asked = Some(reply),
                    None => return,
                },
                received = self.consumer.recv(), if !batch.is_full(bounds) => {
                    self.take(&mut batch, received).await;
                }
            }
        }
    }

    /// Counts a received record and adds it to `batch` with its decided fate.
    async fn take(
        &self,
        batch: &mut Batch,
        received: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    ) {
        let msg = match received {
            Ok(m) => m.detach(),
            Err(e) => {
                // librdkafka reconnects by itself; this is information, and a pause avoids a spin.
                tracing::warn!(error = %e, "kafka consume error; librdkafka keeps retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
        };
        let (route, decision) = decode::decide(
            &self.settings.routes,
            self.settings.limits,
            &msg,
            decode::now_micros(),
        );
        let label = route.as_ref().map_or("unknown", |r| r.label.as_str());
        self.metrics
            .events_consumed
            .with_label_values(&[label])
            .inc();
        let size = msg.payload().map_or(0, <[u8]>::len);
        self.metrics
            .bytes_processed
            .with_label_values(&[label])
            .inc_by(u64::try_from(size).unwrap_or(u64::MAX));
        if matches!(decision, Decision::SkipTombstone) {
            self.metrics
                .tombstones_skipped
                .with_label_values(&[label])
                .inc();
            tracing::info!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "Skipped tombstone (policy: skip)"
            );
        }
        batch.push(Record::new(msg, route, decision));
    }

    /// Asks the fetch stage for a batch whenever it is free, and writes and commits it.
    /// Stops at shutdown, or when the in-flight batch is abandoned at the drain deadline.
    async fn write_stage(
        &self,
        requests: mpsc::Sender<oneshot::Sender<Batch>>,
        shutdown: &CancellationToken,
        abandon: &CancellationToken,
    ) {
        let mut breaker = Breaker::new(
            self.settings.breaker.window,
            self.settings.breaker.max_share,
        );
        loop {
            let (reply, batch) = oneshot::channel();
            if requests.send(reply).await.is_err() {
                return;
            }
            let batch = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                batch = batch => match batch {
                    Ok(batch) => batch,
                    Err(_) => return,
                },
            };
            let records = batch.len();
            if self.process(batch, &mut breaker, abandon).await.is_err() {
                tracing::warn!(
                    records,
                    "drain bound reached: abandoned the in-flight batch; its offsets stay uncommitted and it will be replayed"
                );
                return;
            }
        }
    }

    async fn shut_down(self) {
        match tokio::time::timeout(FINAL_COMMIT_BOUND, self.commit_stored()).await {
            Ok(Ok(())) => tracing::info!("committed offsets on shutdown"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "final commit failed; the group resumes from the last commit");
            }
            Err(_) => {
                tracing::warn!("final commit timed out; the group resumes from the last commit");
            }
        }
        let Job {
            consumer, producer, ..
        } = self;
        // Closing the consumer leaves the group (partitions move at once, not after the
        // session timeout); both calls block, so they run off the async threads, and are
        // not waited for past CLOSE_BOUND (main does not wait for that thread either).
        let closed = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(CLOSE_BOUND / 2);
            drop(consumer);
        });
        if tokio::time::timeout(CLOSE_BOUND, closed).await.is_err() {
            tracing::warn!(
                bound_ms = u64::try_from(CLOSE_BOUND.as_millis()).unwrap_or(u64::MAX),
                "leaving the consumer group takes too long; exiting anyway (the group notices after the session timeout)"
            );
        }
        tracing::info!("consumer-job stopped");
    }

    fn retrying(
        &self,
        operation: &'static str,
        error: &dyn std::fmt::Display,
        attempt: u32,
        delay: Duration,
    ) {
        self.metrics.retries.with_label_values(&[operation]).inc();
        tracing::warn!(operation, attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), %error, "transient fault, retrying");
    }
}
