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
mod hold;
mod tripped;
mod write;

pub use batch::{Batch, Bounds, Record};
pub use breaker::Breaker;
pub use commit::next_offsets;
pub use tripped::{STATE_COLLECTION, Tripped, TrippedStore};

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

/// How long the fetch stage waits with a full batch the writer does not take before it
/// pauses the partitions and polls on (a writer that is only busy takes it sooner).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

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

    /// Gathers records until the write stage asks, then hands over what it has (after
    /// taking whatever else is ready, without waiting). A full batch the writer does not
    /// take within [`PAUSE_AFTER`] pauses the assigned partitions; polling goes on (so
    /// the group, the statistics and rebalances stay alive) and what still arrives is
    /// kept; the partitions resume once the batch is taken, from the first record not
    /// yet received. Stops at shutdown; a batch it still holds then was never written,
    /// so its offsets were never committed.
    async fn fetch_stage(
        &self,
        mut asks: mpsc::Receiver<oneshot::Sender<Batch>>,
        shutdown: &CancellationToken,
    ) {
        let bounds = self.settings.bounds;
        let mut batch = Batch::default();
        let mut asked: Option<oneshot::Sender<Batch>> = None;
        let mut full_since: Option<tokio::time::Instant> = None;
        let mut rebalances = self.flow.rebalances();
        let mut lag_tick = tokio::time::interval(Duration::from_millis(u64::from(
            self.settings.kafka.statistics_interval_ms.max(100),
        )));
        loop {
            if self.flow.rebalances() != rebalances {
                rebalances = self.flow.rebalances();
                self.drop_revoked(&mut batch);
            }
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
                    full_since = None;
                    if self.flow.is_paused() {
                        self.set_paused(false);
                    }
                    continue;
                }
            }
            let full = batch.is_full(bounds);
            if full {
                full_since.get_or_insert_with(tokio::time::Instant::now);
            } else {
                full_since = None;
                if self.flow.is_paused() {
                    // Emptied by a rebalance: nothing to hold any more.
                    self.set_paused(false);
                }
            }
            let pause_at = full_since.unwrap_or_else(tokio::time::Instant::now) + PAUSE_AFTER;
            let paused = self.flow.is_paused();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ask = asks.recv(), if asked.is_none() => match ask {
                    Some(reply) => asked = Some(reply),
                    None => return,
                },
                () = tokio::time::sleep_until(pause_at), if full && !paused => {
                    self.set_paused(true);
                }
                _ = lag_tick.tick(), if paused => self.refresh_lag().await,
                received = self.consumer.recv(), if !full || paused => {
                    self.take(&mut batch, received).await;
                }
            }
        }
    }

    /// Pauses (or resumes) every assigned partition; partitions assigned while paused are
    /// paused by the rebalance hook.
    fn set_paused(&self, paused: bool) {
        self.flow.set_paused(paused);
        let assignment = match self.consumer.assignment() {
            Ok(assignment) => assignment,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let result = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) if paused => tracing::info!(
                partitions = assignment.count(),
                "the writer holds a full batch: fetching paused, polling on (group, lag and rebalances stay alive)"
            ),
            Ok(()) => tracing::info!(partitions = assignment.count(), "fetching resumed"),
            Err(e) => tracing::warn!(error = %e, paused, "cannot pause or resume the partitions"),
        }
    }

    /// The lag of every assigned partition, read from the broker (its end and the
    /// group's committed offset): what librdkafka's statistics report while it fetches,
    /// which it stops doing while the partitions are paused.
    async fn refresh_lag(&self) {
        let consumer = Arc::clone(&self.consumer);
        let read = tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(5);
            let assignment = consumer.assignment()?;
            let committed = consumer.committed_offsets(assignment, timeout)?;
            let mut lags = Vec::new();
            for element in committed.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
                let at = element.offset().to_raw().filter(|o| *o >= 0).unwrap_or(low);
                lags.push((topic.to_owned(), partition, (high - at).max(0)));
            }
            Ok::<_, KafkaError>(lags)
        })
        .await;
        match read {
            Ok(Ok(lags)) => {
                for (topic, partition, lag) in lags {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(lag);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the lag from the broker"),
            Err(e) => tracing::debug!(error = %e, "lag task failed"),
        }
    }

    /// After a rebalance: drops the gathered records of partitions no longer assigned
    /// (their new owner reads them from the last commit; writing them here too could put
    /// an unversioned update out of order).
    fn drop_revoked(&self, batch: &mut Batch) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let owned: std::collections::HashSet<(String, i32)> = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let before = batch.len();
        batch.retain(|r| owned.contains(&(r.msg.topic().to_owned(), r.msg.partition())));
        if batch.len() < before {
            tracing::info!(
                dropped = before - batch.len(),
                "dropped gathered records of revoked partitions"
            );
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
                let due = Duration::from_millis(open.due_in_ms());
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(due) => {}
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

    /// The breaker opens on `batch`: the state to keep, and the one line that says so.
    fn trip(&self, batch: &Batch) -> Tripped {
        let settings = self.settings.breaker;
        let dead = batch
            .records
            .iter()
            .filter(|r| r.dead_letter().is_some())
            .count();
        let at = batch.records.first().map_or_else(String::new, |r| {
            format!(
                "{}[{}]@{}",
                r.msg.topic(),
                r.msg.partition(),
                r.msg.offset()
            )
        });
        let reason = format!(
            "{dead} of a batch of {} records would be dead-lettered, past {} of the last {}",
            batch.len(),
            settings.max_share,
            settings.window
        );
        tracing::error!(
            %reason,
            at,
            probe_every_s = settings.probe_interval.as_secs(),
            "dead-letter breaker open: holding the stream (nothing dead-lettered or committed), \
             trying one record per probe interval. Inspect the records, fix their producer, \
             or raise LEAFSYNC_DLQ_BREAKER_MAX_SHARE"
        );
        let now = mongodb::bson::DateTime::now();
        Tripped {
            opened_at: now,
            next_probe_at: mongodb::bson::DateTime::from_millis(
                now.timestamp_millis()
                    + i64::try_from(settings.probe_interval.as_millis()).unwrap_or(i64::MAX),
            ),
            probes: 0,
            reason,
            at,
        }
    }

    /// Runs a write of the breaker's state until it succeeds; `false` when abandoned.
    async fn keep<F, Fut>(&self, write: F, abandon: &CancellationToken) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), RepoError>>,
    {
        retry(
            self.settings.backoff,
            abandon,
            write,
            |_: &RepoError| true,
            |e, attempt, delay| self.retrying("breaker-state", e, attempt, delay),
        )
        .await
        .is_ok()
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
