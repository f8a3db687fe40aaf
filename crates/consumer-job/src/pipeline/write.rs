//! Writing a batch: the upserts as one bulk (retried while the fault is transient,
//! narrowed down one write at a time when the bulk fails for good), then the dead letters,
//! then the commit. Each record gets an outcome in the metrics and the log.

use leafsync_core::{RepoError, Write, WriteOutcome};
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use super::{Abandoned, Job, batch::Batch};
use crate::{
    decode::{DeadLetter, Decision},
    dlq,
    retry::{Gave, retry},
};

impl Job {
    /// Applies one batch and commits it. `Err` only when abandoned at the drain deadline.
    pub(super) async fn process(
        &self,
        batch: Batch,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let started = std::time::Instant::now();
        let mut msgs: Vec<OwnedMessage> = Vec::with_capacity(batch.len());
        let mut writes: Vec<Write> = Vec::new();
        let mut write_records: Vec<usize> = Vec::new();
        let mut dead: Vec<(usize, DeadLetter)> = Vec::new();
        for (i, record) in batch.records.into_iter().enumerate() {
            msgs.push(record.msg);
            match record.decision {
                Decision::Apply(w) => {
                    writes.push(w);
                    write_records.push(i);
                }
                Decision::DeadLetter(d) => dead.push((i, d)),
                Decision::SkipTombstone => {}
            }
        }

        let outcomes = if writes.is_empty() {
            Vec::new()
        } else {
            self.apply(&writes, abandon).await?
        };
        for ((w, &i), outcome) in writes.iter().zip(&write_records).zip(outcomes) {
            let label = self.label(msgs[i].topic());
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

        let admitted = self
            .breaker
            .lock()
            .map_or(true, |mut b| b.admit(msgs.len(), dead.len()));
        if !admitted {
            return Err(self
                .hold_for_the_breaker(msgs.len(), dead.len(), abandon)
                .await);
        }
        self.dead_letter(&msgs, &dead, abandon).await?;
        self.commit_batch(&msgs, abandon).await?;
        self.metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
        #[allow(clippy::cast_precision_loss)] // batch sizes are far below 2^52
        self.metrics.batch_size.observe(msgs.len() as f64);
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
            window = self.config.dlq_breaker_window,
            max_share = self.config.dlq_breaker_max_share,
            "dead-letter breaker open: too many records of the last window would be dead-lettered; \
             holding the stream (nothing dead-lettered or committed) until restarted. Inspect the \
             records, fix their producer, or raise LEAFSYNC_DLQ_BREAKER_MAX_SHARE and restart"
        );
        abandon.cancelled().await;
        Abandoned
    }

    /// The bulk upsert with retries. Every failure that is not the documents' own is
    /// waited out, however long: transient ones quietly, others (credentials, roles, a full
    /// disk, unknown codes) with the job unready (`mongo-refused`), since dead-lettering
    /// the stream would not help. A document-level failure of the whole bulk is narrowed
    /// down by applying the writes one at a time, so only the culprit is rejected.
    async fn apply(
        &self,
        writes: &[Write],
        abandon: &CancellationToken,
    ) -> Result<Vec<WriteOutcome>, Abandoned> {
        let refused = self.metrics.stalled.with_label_values(&["mongo-refused"]);
        let result = retry(
            self.backoff,
            abandon,
            || self.repo.apply(writes),
            |e: &RepoError| !e.is_document_level(),
            |e, attempt, delay| {
                if !e.is_retriable() {
                    refused.set(1);
                }
                self.retrying("mongo", e, attempt, delay);
            },
        )
        .await;
        refused.set(0);
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
                for w in writes {
                    outcomes.extend(Box::pin(self.apply(std::slice::from_ref(w), abandon)).await?);
                }
                Ok(outcomes)
            }
        }
    }

    async fn dead_letter(
        &self,
        msgs: &[OwnedMessage],
        dead: &[(usize, DeadLetter)],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let unsent = self
            .metrics
            .stalled
            .with_label_values(&["dead-letter-send"]);
        let unsent = &unsent;
        let sends = dead.iter().map(|(i, letter)| async move {
            let msg = &msgs[*i];
            let sent = retry(
                self.backoff,
                abandon,
                || dlq::send(&self.producer, &self.config.dlq_topic, msg, letter),
                |_| true,
                |e, attempt, delay| {
                    unsent.set(1);
                    self.retrying("dead-letter", e, attempt, delay);
                },
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
        let result = futures::future::try_join_all(sends).await.map(|_| ());
        unsent.set(0);
        result
    }
}
