//! Writing a batch: the upserts as one bulk (retried while the fault is transient,
//! narrowed down one write at a time when the bulk fails for good), then the dead letters,
//! then the commit. Each record gets an outcome in the metrics and the log.

use leafsync_core::{RepoError, Write, WriteOutcome};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::{
    Abandoned, Job, UNAVAILABLE, UNAVAILABLE_AFTER,
    batch::{Batch, Record},
    breaker::Breaker,
    hold::Holding,
};
use crate::{
    dlq,
    retry::{Gave, retry},
};

/// What became of a batch.
pub(super) enum Processed {
    /// Written, dead letters sent, offsets committed; `dead` records were dead-lettered.
    Committed {
        /// Records dead-lettered.
        dead: usize,
    },
    /// The breaker refused it: written where it could be, but nothing dead-lettered or
    /// committed. The batch comes back, to be held.
    Tripped(Batch),
}

impl Job {
    /// Applies one batch and commits it, unless `breaker` refuses its dead letters (no
    /// breaker: a probe, always let through). `Err` only when abandoned at the drain
    /// deadline.
    pub(super) async fn process(
        &self,
        mut batch: Batch,
        breaker: Option<&mut Breaker>,
        abandon: &CancellationToken,
    ) -> Result<Processed, Abandoned> {
        let started = std::time::Instant::now();
        let writes: Vec<&Write> = batch.records.iter().filter_map(Record::write).collect();
        if !writes.is_empty() {
            let writing = std::time::Instant::now();
            let outcomes = self.apply(&writes, abandon).await?;
            self.metrics
                .write_duration
                .observe(writing.elapsed().as_secs_f64());
            let written = batch.records.iter_mut().filter(|r| r.write().is_some());
            for (record, outcome) in written.zip(outcomes) {
                record.settle(outcome);
            }
        }
        let dead = batch
            .records
            .iter()
            .filter(|r| r.dead_letter().is_some())
            .count();
        if let Some(breaker) = breaker {
            if !breaker.admit(batch.len(), dead) {
                return Ok(Processed::Tripped(batch));
            }
        }
        let mut tally = std::collections::BTreeMap::<&'static str, usize>::new();
        for record in &batch.records {
            if let (Some(outcome), Some(w)) = (&record.outcome, record.write()) {
                self.record_outcome(record.label(), w, outcome);
                *tally.entry(outcome.as_str()).or_default() += 1;
            }
        }
        self.dead_letter(&batch.records, abandon).await?;
        self.store_batch(batch.records.iter().map(|r| &r.msg));
        let took = started.elapsed();
        self.metrics.batch_duration.observe(took.as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        self.metrics.batch_size.observe(batch.len() as f64);
        tracing::info!(
            records = batch.len(),
            dead,
            ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            outcomes = ?tally,
            "batch written, its offsets stored"
        );
        Ok(Processed::Committed { dead })
    }

    fn record_outcome(&self, label: &str, w: &Write, outcome: &WriteOutcome) {
        let name = outcome.as_str();
        self.metrics.images.with_label_values(&[label, name]).inc();
        let verb = match outcome {
            WriteOutcome::Inserted => "Inserted",
            WriteOutcome::Updated => "Updated",
            WriteOutcome::Unchanged => "Unchanged",
            WriteOutcome::Collapsed => "Collapsed (a later version in the batch covers it)",
            WriteOutcome::Stale => "Stale (stored image is newer, event ignored)",
            WriteOutcome::Rejected { .. } => "Rejected",
            WriteOutcome::Duplicate { .. } => "Duplicate key on another unique index",
        };
        tracing::debug!(
            plant = label,
            id = w.change.id.get(),
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

    /// The bulk upsert with retries. Every failure that is not the documents' own is
    /// waited out, however long: transient ones quietly, others (credentials, roles, a full
    /// disk, a write concern the deployment cannot satisfy) held, with the job unready
    /// ([`leafsync_core::Hold`]), since dead-lettering the stream would not help. A document-level failure of the whole bulk is narrowed
    /// down by applying the writes one at a time, so only the culprit is rejected.
    async fn apply(
        &self,
        writes: &[&Write],
        abandon: &CancellationToken,
    ) -> Result<Vec<WriteOutcome>, Abandoned> {
        let mut holding = Holding::new(&self.metrics.stalled);
        let result = retry(
            self.settings.backoff,
            abandon,
            || self.repo.apply(writes),
            |e: &RepoError| !e.is_document_level(),
            |e, attempt, delay| {
                match e.hold() {
                    Some(hold) => holding.enter(hold.as_str(), e),
                    None if attempt >= UNAVAILABLE_AFTER => holding.enter(UNAVAILABLE, e),
                    None => {}
                }
                self.retrying("mongo", e, attempt, delay);
            },
        )
        .await;
        if result.is_ok() {
            holding.leave();
        }
        drop(holding);
        match result {
            Ok(outcomes) => Ok(outcomes),
            Err(Gave::Abandoned) => Err(Abandoned),
            Err(Gave::Up(e)) if writes.len() == 1 => Ok(vec![WriteOutcome::Rejected {
                code: e.code().unwrap_or(0),
                message: e.to_string(),
            }]),
            Err(Gave::Up(e)) => {
                tracing::warn!(error = %e, "bulk write failed permanently; applying its writes one by one");
                let mut outcomes = Vec::with_capacity(writes.len());
                for &w in writes {
                    outcomes.extend(Box::pin(self.apply(&[w], abandon)).await?);
                }
                Ok(outcomes)
            }
        }
    }

    /// Sends every dead letter of the batch, each retried until the topic takes it.
    async fn dead_letter(
        &self,
        records: &[Record],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let unsent = self
            .metrics
            .stalled
            .with_label_values(&["dead-letter-send"]);
        let unsent = &unsent;
        let sends = records.iter().filter_map(|record| {
            let letter = record.dead_letter()?;
            let msg = &record.msg;
            Some(async move {
                let sent = retry(
                    self.settings.backoff,
                    abandon,
                    || dlq::send(&self.producer, &self.settings.dlq_topic, msg, letter),
                    |_| true,
                    |e, attempt, delay| {
                        unsent.set(1);
                        self.retrying("dead-letter", e, attempt, delay);
                    },
                )
                .await;
                match sent {
                    Ok(()) => {
                        let reason = letter.reason.as_str();
                        self.metrics.dead_lettered.with_label_values(&[reason]).inc();
                        tracing::warn!(
                            topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                            reason, detail = %letter.detail,
                            "Dead-lettered {}[{}]@{}: {reason}", msg.topic(), msg.partition(), msg.offset()
                        );
                        Ok(())
                    }
                    Err(_) => Err(Abandoned),
                }
            })
        });
        let result = futures::future::try_join_all(sends).await.map(|_| ());
        unsent.set(0);
        result
    }
}
