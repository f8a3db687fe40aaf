//! The consume → write → commit loop.
//!
//! One batch at a time: collect records (up to a count, a byte size, or a short wait after
//! the first), decide each one's fate, apply all upserts as one bulk, dead-letter what
//! cannot be applied, then store and commit the offsets. Offsets move only after every
//! record of the batch reached Mongo or the dead-letter topic, so a crash anywhere replays
//! the batch (harmless: writes are idempotent and order-safe) and never skips it.
//!
//! Transient faults (Mongo down, broker down, commit errors) are retried with jittered
//! backoff. On shutdown the loop stops fetching; the in-flight batch may finish within the
//! drain bound, else it is abandoned uncommitted; then the job commits and leaves the group.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use leafsync_core::{ImageRepository, RepoError, Write, WriteOutcome, mongo};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Message, OwnedMessage},
    producer::{FutureProducer, Producer},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, EnvConfig, JobConfig, Route},
    decode::{self, DeadLetter, Decision, Limits},
    dlq,
    kafka::{self, JobContext},
    metrics::JobMetrics,
    retry::{Backoff, Gave, retry},
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
    config: JobConfig,
    routes: Vec<Route>,
    consumer: Arc<StreamConsumer<JobContext>>,
    producer: FutureProducer,
    repo: ImageRepository,
    metrics: JobMetrics,
    backoff: Backoff,
}

impl Job {
    /// Creates the clients. Nothing is contacted yet except to parse the Mongo URI.
    pub async fn build(config: JobConfig, metrics: JobMetrics) -> Result<Self, JobError> {
        config.validate()?;
        let routes = config.routes()?;
        let client = mongo::connect(&config.mongo_uri, "leafsync-consumer-job")
            .await
            .map_err(RepoError::from)?;
        let repo = ImageRepository::new(client, &config.mongo_db, config.mongo_write_path);
        let consumer = Arc::new(kafka::consumer(&config, metrics.clone())?);
        let producer = kafka::producer(&config)?;
        let backoff = Backoff {
            base: Duration::from_millis(config.retry_base_ms),
            max: Duration::from_millis(config.retry_max_ms),
        };
        Ok(Self {
            config,
            routes,
            consumer,
            producer,
            repo,
            metrics,
            backoff,
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
                self.config.drain_timeout(),
            );
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(bound).await;
                abandon.cancel();
            }
        });

        let collections: Vec<&str> = self.routes.iter().map(|r| r.collection.as_str()).collect();
        let indexed = retry(
            self.backoff,
            &shutdown,
            || self.repo.ensure_indexes(&collections),
            RepoError::is_retriable,
            |e, attempt, delay| self.retrying("startup", e, attempt, delay),
        )
        .await;
        match indexed {
            Ok(()) => {}
            Err(Gave::Abandoned) => return Ok(()),
            Err(Gave::Up(e)) => return Err(e.into()),
        }
        kafka::ensure_topic(&self.config, &self.config.dlq_topic, 1).await;
        let topics: Vec<&str> = self.routes.iter().map(|r| r.topic.as_str()).collect();
        self.consumer.subscribe(&topics)?;
        tracing::info!(?topics, group = %self.config.kafka_group_id, "consuming");

        loop {
            let batch = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                batch = self.next_batch() => batch,
            };
            if self.process(&batch, &abandon).await.is_err() {
                tracing::warn!(
                    records = batch.len(),
                    "drain bound reached: abandoned the in-flight batch; its offsets stay uncommitted and it will be replayed"
                );
                break;
            }
        }

        drain_clock.abort();
        self.shut_down().await;
        Ok(())
    }

    /// Waits for one record, then gathers more until the batch is full or its wait ends.
    async fn next_batch(&self) -> Vec<OwnedMessage> {
        let first = loop {
            match self.consumer.recv().await {
                Ok(m) => break m.detach(),
                Err(e) => self.consume_error(&e).await,
            }
        };
        let mut bytes = first.payload().map_or(0, <[u8]>::len);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.batch_max_wait();
        while batch.len() < self.config.batch_max_messages && bytes < self.config.batch_max_bytes {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    bytes += m.payload().map_or(0, <[u8]>::len);
                    batch.push(m.detach());
                }
                Ok(Err(e)) => self.consume_error(&e).await,
                Err(_) => break,
            }
        }
        batch
    }

    async fn consume_error(&self, e: &KafkaError) {
        // librdkafka reconnects by itself; this is information, and a pause avoids a spin.
        tracing::warn!(error = %e, "kafka consume error; librdkafka keeps retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// Applies one batch and commits it. `Err` only when abandoned at the drain deadline.
    async fn process(
        &self,
        batch: &[OwnedMessage],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let started = Instant::now();
        let limits = Limits {
            max_event_bytes: self.config.max_event_bytes,
            tombstones: self.config.tombstone_policy,
        };
        let mut writes: Vec<Write> = Vec::new();
        let mut write_records: Vec<usize> = Vec::new();
        let mut dead: Vec<(usize, DeadLetter)> = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let label = self.label(msg.topic());
            self.metrics
                .events_consumed
                .with_label_values(&[label])
                .inc();
            let size = msg.payload().map_or(0, <[u8]>::len);
            self.metrics
                .bytes_processed
                .with_label_values(&[label])
                .inc_by(u64::try_from(size).unwrap_or(u64::MAX));
            match decode::decide(&self.routes, limits, msg) {
                Decision::Apply(w) => {
                    writes.push(w);
                    write_records.push(i);
                }
                Decision::DeadLetter(d) => dead.push((i, d)),
                Decision::SkipTombstone => {
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
            }
        }

        let outcomes = if writes.is_empty() {
            Vec::new()
        } else {
            self.apply(&writes, abandon).await?
        };
        for ((w, &i), outcome) in writes.iter().zip(&write_records).zip(outcomes) {
            let label = self.label(batch[i].topic());
            if let WriteOutcome::Rejected { code, message } = outcome {
                dead.push((
                    i,
                    DeadLetter {
                        reason: "mongo-rejected",
                        detail: format!("MongoDB refused the write (code {code}): {message}"),
                        omit_value: false,
                    },
                ));
                continue;
            }
            self.record_outcome(label, w, &outcome);
        }

        self.dead_letter(batch, &dead, abandon).await?;
        self.commit_batch(batch, abandon).await?;
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        self.metrics.batch_size.observe(batch.len() as f64);
        Ok(())
    }

    fn record_outcome(&self, label: &str, w: &Write, outcome: &WriteOutcome) {
        let name = outcome.as_str();
        self.metrics.images.with_label_values(&[label, name]).inc();
        let verb = match outcome {
            WriteOutcome::Inserted => "Inserted",
            WriteOutcome::Updated => "Updated",
            WriteOutcome::Unchanged => "Unchanged",
            WriteOutcome::Stale => "Stale (stored image is newer, event ignored)",
            WriteOutcome::Rejected { .. } => "Rejected",
        };
        tracing::info!(
            plant = label,
            id = w.change.id,
            outcome = name,
            "{verb} {label} #{}",
            w.change.id
        );
        if matches!(outcome, WriteOutcome::Inserted | WriteOutcome::Updated) {
            if let Some(at) = w.change.event_time() {
                let now = mongodb::bson::DateTime::now().timestamp_millis();
                #[allow(clippy::cast_precision_loss)] // millisecond ages fit an f64
                let age = (now - at.timestamp_millis()).max(0) as f64 / 1000.0;
                self.metrics
                    .end_to_end_lag
                    .with_label_values(&[label])
                    .observe(age);
            }
        }
    }

    /// The bulk upsert with retries. A permanent whole-batch failure is narrowed down by
    /// applying the writes one at a time, so only the culprit is rejected.
    async fn apply(
        &self,
        writes: &[Write],
        abandon: &CancellationToken,
    ) -> Result<Vec<WriteOutcome>, Abandoned> {
        let result = retry(
            self.backoff,
            abandon,
            || self.repo.apply(writes),
            RepoError::is_retriable,
            |e, attempt, delay| self.retrying("mongo", e, attempt, delay),
        )
        .await;
        match result {
            Ok(outcomes) => Ok(outcomes),
            Err(Gave::Abandoned) => Err(Abandoned),
            Err(Gave::Up(e)) if writes.len() == 1 => Ok(vec![WriteOutcome::Rejected {
                code: 0,
                message: e.to_string(),
            }]),
            Err(Gave::Up(e)) => {
                tracing::warn!(error = %e, "bulk write failed permanently; applying its writes one by one");
                let mut outcomes = Vec::with_capacity(writes.len());
                for w in writes {
                    outcomes.extend(Box::pin(self.apply(std::slice::from_ref(w), abandon)).await?);
                }
                Ok(outcomes)
            }
        }
    }

    async fn dead_letter(
        &self,
        batch: &[OwnedMessage],
        dead: &[(usize, DeadLetter)],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let sends = dead.iter().map(|(i, letter)| async move {
            let msg = &batch[*i];
            let sent = retry(
                self.backoff,
                abandon,
                || dlq::send(&self.producer, &self.config.dlq_topic, msg, letter),
                |_| true,
                |e, attempt, delay| self.retrying("dead-letter", e, attempt, delay),
            )
            .await;
            match sent {
                Ok(()) => {
                    self.metrics.dead_lettered.with_label_values(&[letter.reason]).inc();
                    tracing::warn!(
                        topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                        reason = letter.reason, detail = %letter.detail,
                        "Dead-lettered {}[{}]@{}: {}", msg.topic(), msg.partition(), msg.offset(), letter.reason
                    );
                    Ok(())
                }
                Err(_) => Err(Abandoned),
            }
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    }

    /// Stores the batch's offsets and commits them. A commit that keeps failing is left
    /// to the next batch's commit (stored offsets are kept): never skipped, never ahead.
    async fn commit_batch(
        &self,
        batch: &[OwnedMessage],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in batch {
            let entry = next.entry((m.topic(), m.partition())).or_insert(0);
            *entry = (*entry).max(m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::error!(error = %e, topic, partition, "cannot build the offset list");
            }
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partitions were revoked mid-batch; their new owner replays from the last commit.
            tracing::info!(error = %e, "offsets not stored (partitions no longer assigned)");
            return Ok(());
        }
        for attempt in 0..5 {
            match self.commit_stored().await {
                Ok(()) => {
                    self.metrics.commits.with_label_values(&["ok"]).inc();
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.commits.with_label_values(&["error"]).inc();
                    if !commit_retriable(&e) {
                        tracing::warn!(error = %e, "commit refused (group rebalancing); the next owner replays from the last commit");
                        return Ok(());
                    }
                    let delay = self.backoff.delay(attempt);
                    self.retrying("commit", &e, attempt, delay);
                    tokio::select! {
                        biased;
                        () = abandon.cancelled() => return Err(Abandoned),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        tracing::warn!(
            "commit still failing after 5 attempts; offsets stay stored and go with the next commit"
        );
        Ok(())
    }

    /// `commit_consumer_state(Sync)` off the async threads (it blocks on the broker).
    async fn commit_stored(&self) -> Result<(), KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        match tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await
        {
            Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(join) => Err(KafkaError::Canceled)
                .inspect_err(|_| tracing::error!(error = %join, "commit task failed")),
        }
    }

    async fn shut_down(self) {
        match tokio::time::timeout(Duration::from_secs(5), self.commit_stored()).await {
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
        // session timeout); both calls block, so they run off the async threads.
        let closed = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(Duration::from_secs(5));
            drop(consumer);
        });
        if tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .is_err()
        {
            tracing::warn!("leaving the consumer group took over 10 s; exiting anyway");
        }
        tracing::info!("consumer-job stopped");
    }

    fn label(&self, topic: &str) -> &str {
        self.routes
            .iter()
            .find(|r| r.topic == topic)
            .map_or("unknown", |r| r.label.as_str())
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

/// Commit errors worth retrying now; a lost generation or membership is not (the
/// partitions are someone else's until the next poll rejoins).
fn commit_retriable(e: &KafkaError) -> bool {
    !matches!(
        e,
        KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::State
                | RDKafkaErrorCode::Fenced
        )
    )
}
