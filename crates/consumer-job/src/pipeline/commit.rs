//! Committing a batch: store its offsets, then commit them synchronously, only after
//! every record of the batch reached MongoDB or the dead-letter topic. Batches reach this
//! one at a time, in consumption order, so a later batch's offsets are never committed
//! before an earlier batch is durable.

use std::sync::Arc;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedMessage,
};
use tokio_util::sync::CancellationToken;

use super::{Abandoned, Job, batch::next_offsets};

impl Job {
    /// Stores the batch's offsets and commits them. A commit that keeps failing is left
    /// to the next batch's commit (stored offsets are kept): never skipped, never ahead.
    pub(super) async fn commit_batch(
        &self,
        msgs: &[OwnedMessage],
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in next_offsets(msgs) {
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
    pub(super) async fn commit_stored(&self) -> Result<(), KafkaError> {
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
