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
//! backoff. While the writer holds (an outage, a refusal, the index, the breaker), the
//! fetch stage pauses the assigned partitions once its batch is full and goes on polling:
//! the member keeps its place in the group, statistics (the lag metric) and rebalances go
//! on, and fetching resumes from the first record not yet handed over. On shutdown both
//! stages stop taking work; the in-flight batch may finish within the drain bound, else it
//! is abandoned uncommitted; then the job commits and leaves the group.

mod batch;
mod breaker;
mod commit;
mod fetch;
mod hold;
mod tripped;
mod write;

pub use batch::{Batch, Bounds, Record};
pub use breaker::Breaker;
pub use commit::next_offsets;
pub use tripped::{STATE_COLLECTION, Tripped, TrippedStore};

use std::{sync::Arc, time::Duration};

use leafsync_core::{ImageRepository, RepoError, mongo};
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    producer::{FutureProducer, Producer},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{CLOSE_BOUND, ConfigError, FINAL_COMMIT_BOUND, Settings},
    kafka::{self, Flow, JobContext},
    metrics::JobMetrics,
    retry::{Gave, retry},
};
use write::Processed;

/// The hold reason of a MongoDB that stays unreachable (or keeps answering with transient
/// errors): after this many retries in a row, the job says so, where a blip stays quiet.
const UNAVAILABLE: &str = "mongo-unavailable";
const UNAVAILABLE_AFTER: u32 = 3;

/// A commit in flight while the next batch is awaited or written.
type Commit<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Runs `work` while the commit in flight (if any) finishes.
async fn overlapped<T>(
    committing: &mut Option<Commit<'_>>,
    work: impl std::future::Future<Output = T>,
) -> T {
    let previous = committing.take();
    let (out, ()) = tokio::join!(work, async {
        if let Some(commit) = previous {
            commit.await;
        }
    });
    out
}

/// Finishes the commit in flight.
async fn finish(committing: &mut Option<Commit<'_>>) {
    if let Some(commit) = committing.as_mut() {
        commit.await;
    }
    *committing = None;
}

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
    flow: Arc<Flow>,
    producer: FutureProducer,
    repo: ImageRepository,
    tripped: TrippedStore,
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
        let tripped = TrippedStore::new(repo.database(), &settings.kafka.group_id);
        let flow = Arc::new(Flow::default());
        let consumer = Arc::new(kafka::consumer(
            &settings.kafka,
            metrics.clone(),
            Arc::clone(&flow),
        )?);
        let producer = kafka::producer(&settings.kafka.brokers, settings.limits.max_record_bytes)?;
        Ok(Self {
            settings,
            consumer,
            flow,
            producer,
            repo,
            tripped,
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

        // Subscribed first, so a job that holds from the start (duplicate ids, an open
        // breaker, MongoDB down) is a member with live lag metrics, not absent.
        let settings = &self.settings;
        kafka::ensure_topic(&settings.kafka.brokers, &settings.dlq_topic, 1).await;
        let topics = settings.routes.topics();
        self.consumer.subscribe(&topics)?;
        tracing::info!(?topics, group = %settings.kafka.group_id, "consuming");

        let (requests, asks) = mpsc::channel(1);
        let ((), started) = tokio::join!(
            self.fetch_stage(asks, &shutdown),
            self.write_stage(requests, &shutdown, &abandon),
        );

        drain_clock.abort();
        self.shut_down().await;
        match started {
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }

    /// What must hold before anything is written: the unique index on `id` (the stale
    /// guard depends on it), and the breaker's state (open, if a replica left it so).
    /// A permanent cause (duplicate ids, a non-unique index, no rights) holds the job
    /// unready with an error that says what to do, instead of a crash loop: `dedupe
    /// --apply` can run in the same pod, and the job goes on by itself. `Ok(None)`:
    /// shut down meanwhile.
    async fn start_writing(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Option<Tripped>>, RepoError> {
        let collections = self.settings.routes.collections();
        let mut holding = hold::Holding::new(&self.metrics.stalled);
        let started = retry(
            self.settings.backoff,
            shutdown,
            || async {
                self.repo.ensure_indexes(&collections).await?;
                self.tripped.load().await
            },
            |_: &RepoError| true,
            |e, attempt, delay| {
                match e.hold() {
                    Some(hold) => holding.enter(hold.as_str(), e),
                    None if attempt >= UNAVAILABLE_AFTER => holding.enter(UNAVAILABLE, e),
                    None => {}
                }
                self.retrying("startup", e, attempt, delay);
            },
        )
        .await;
        match started {
            Ok(tripped) => {
                holding.leave();
                Ok(Some(tripped))
            }
            Err(Gave::Abandoned) => Ok(None),
            Err(Gave::Up(e)) => Err(e),
        }
    }

    /// Asks the fetch stage for a batch whenever it is free, and writes it; the commit
    /// of a batch's offsets runs while the next batch is awaited or written. Stops at
    /// shutdown, or when the in-flight batch is abandoned at the drain deadline, after
    /// the commit in flight (bounded by the drain deadline too). While the dead-letter
    /// breaker is open it holds the batch, and tries one record each probe interval:
    /// dead-lettered, the breaker stays open; applied, it closes.
    async fn write_stage(
        &self,
        requests: mpsc::Sender<oneshot::Sender<Batch>>,
        shutdown: &CancellationToken,
        abandon: &CancellationToken,
    ) -> Result<(), RepoError> {
        let Some(tripped) = self.start_writing(shutdown).await? else {
            return Ok(());
        };
        let mut committing: Option<Commit<'_>> = None;
        self.write_batches(&requests, shutdown, abandon, tripped, &mut committing)
            .await;
        if let Some(commit) = committing {
            tokio::select! {
                biased;
                () = abandon.cancelled() => {}
                () = commit => {}
            }
        }
        Ok(())
    }

    async fn write_batches<'a>(
        &'a self,
        requests: &mpsc::Sender<oneshot::Sender<Batch>>,
        shutdown: &CancellationToken,
        abandon: &'a CancellationToken,
        mut tripped: Option<Tripped>,
        committing: &mut Option<Commit<'a>>,
    ) {
        let settings = self.settings.breaker;
        let mut breaker = Breaker::new(settings.window, settings.max_share);
        let mut holding = hold::Holding::new(&self.metrics.stalled);
        let mut pending: Option<Batch> = None;
        loop {
            let batch = if let Some(batch) = pending.take() {
                batch
            } else {
                let (reply, mut batch) = oneshot::channel();
                if requests.send(reply).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        batch = &mut batch => match batch {
                            Ok(batch) => break batch,
                            Err(_) => return,
                        },
                        () = finish(committing), if committing.is_some() => {}
                    }
                }
            };
            let records = batch.len();
            if let Some(open) = &mut tripped {
                holding.enter("dead-letter-breaker", &open.reason);
                // Until the next probe is due; the last probe's commit goes on meanwhile
                // (else a restart within the interval would dead-letter it again).
                let due = tokio::time::sleep(Duration::from_millis(open.due_in_ms()));
                tokio::pin!(due);
                loop {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => return,
                        () = &mut due => break,
                        () = finish(committing), if committing.is_some() => {}
                    }
                }
                let (probe, rest) = batch.split_first();
                let Ok(Processed::Committed { dead }) =
                    overlapped(committing, self.process(probe, None, abandon)).await
                else {
                    return;
                };
                *committing = Some(Box::pin(self.commit_stored_offsets(abandon)));
                if dead > 0 {
                    open.probes += 1;
                    open.next_probe_at = mongodb::bson::DateTime::from_millis(
                        mongodb::bson::DateTime::now().timestamp_millis()
                            + i64::try_from(settings.probe_interval.as_millis())
                                .unwrap_or(i64::MAX),
                    );
                    tracing::warn!(
                        probes = open.probes,
                        "breaker probe dead-lettered: the breaker stays open"
                    );
                    if !self.keep(|| self.tripped.save(open), abandon).await {
                        return;
                    }
                } else {
                    tracing::warn!(
                        probes = open.probes,
                        "breaker probe went through: the breaker closes"
                    );
                    if !self.keep(|| self.tripped.clear(), abandon).await {
                        return;
                    }
                    tripped = None;
                    holding.leave();
                    breaker = Breaker::after_probe(settings.window, settings.max_share);
                }
                pending = (!rest.is_empty()).then_some(rest);
                continue;
            }
            match overlapped(committing, self.process(batch, Some(&mut breaker), abandon)).await {
                Ok(Processed::Committed { .. }) => {
                    *committing = Some(Box::pin(self.commit_stored_offsets(abandon)));
                }
                Ok(Processed::Tripped(batch)) => {
                    let open = self.trip(&batch);
                    if !self.keep(|| self.tripped.save(&open), abandon).await {
                        return;
                    }
                    tripped = Some(open);
                    pending = Some(batch);
                }
                Err(Abandoned) => {
                    tracing::warn!(
                        records,
                        "drain bound reached: abandoned the in-flight batch; its offsets stay uncommitted and it will be replayed"
                    );
                    return;
                }
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
        // session timeout); both calls block, so they run on a thread of their own (not
        // tokio's blocking pool, which a runtime shutting down waits for), and are not
        // waited for past CLOSE_BOUND.
        let (done, closed) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("leafsync-close".to_owned())
            .spawn(move || {
                let _ = producer.flush(CLOSE_BOUND / 2);
                drop(consumer);
                drop(done);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the closing thread; closing on this one");
        } else if tokio::time::timeout(CLOSE_BOUND, closed).await.is_err() {
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
