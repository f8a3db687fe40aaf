//! Writing a batch: the upserts as one bulk (retried while the fault is transient,
//! narrowed down one write at a time when the bulk fails for good), then the dead letters,
//! then the commit. Each record gets an outcome in the metrics and the log.

use leafsync_core::{RepoError, Write, WriteOutcome};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use super::{
    Abandoned, Job,
    batch::{Batch, Record},
    breaker::Breaker,
    hold::Holding,
};
use crate::{
    dlq,
    retry::{Gave, retry},
};

impl Job {
    /// Applies one batch and commits it. `Err` only when abandoned at the drain deadline.
    pub(super) async fn process(
        &self,
        mut batch: Batch,
        breaker: &mut Breaker,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let started = std::time::Instant::now();
        let writes: Vec<&Write> = batch.records.iter().filter_map(Record::write).collect();
        if !writes.is_empty() {
            let outcomes = self.apply(&writes, abandon).await?;
            let written = batch.records.iter_mut().filter(|r| r.write().is_some());
            for (record, outcome) in written.zip(outcomes) {
                record.settle(outcome);
            }
        }
        for record in &batch.records {
            if let (Some(outcome), Some(w)) = (&record.outcome, record.write()) {
                self.record_outcome(record.label(), w, outcome);
            }
        }

        let dead = batch
            .records
            .iter()
            .filter(|r| r.dead_letter().is_some())
            .count();
        if !breaker.admit(batch.len(), dead) {
            return Err(self.hold_for_the_breaker(batch.len(), dead, abandon).await);
        }
        self.dead_letter(&batch.records, abandon).await?;
        self.commit_batch(batch.records.iter().map(|r| &r.msg), abandon)
            .await?;
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
            WriteOutcome::Collapsed => "Collapsed (a later version in the batch covers it)",
            WriteOutcome::Stale => "Stale (stored image is newer, event ignored)",
            WriteOutcome::Rejected { .. } => "Rejected",
            WriteOutcome::Duplicate { .. } => "Duplicate key on another unique index",
        };
        tracing::info!(
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

    /// Too many dead letters: hold the batch (uncommitted, not dead-lettered) and stay
    /// unready until shutdown; the operator looks at the records and restarts the job
    /// (with a larger `LEAFSYNC_DLQ_BREAKER_MAX_SHARE` if they are poison indeed).
    async fn hold_for_the_breaker(
        &self,
        records: usize,
        dead: usize,
        abandon: &CancellationToken,
    ) -> Abandoned {
        let stalled = self
            .metrics
            .stalled
            .with_label_values(&["dead-letter-breaker"]);
        stalled.set(1);
        tracing::error!(
            records,
            dead,
            window = self.settings.breaker.window,
            max_share = self.settings.breaker.max_share,
            "dead-letter breaker open: too many records of the last window would be dead-lettered; \
             holding the stream (nothing dead-lettered or committed) until restarted. Inspect the \
             records, fix their producer, or raise LEAFSYNC_DLQ_BREAKER_MAX_SHARE and restart"
        );
        abandon.cancelled().await;
        Abandoned
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
                    None => holding.leave(),
                }
                self.retrying("mongo", e, attempt, delay);
            },
        )
        .await;
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
