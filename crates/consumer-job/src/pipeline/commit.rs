//! Committing a batch: store its offsets, then commit them synchronously, only after
//! every record of the batch reached MongoDB or the dead-letter topic. Batches reach this
//! one at a time, in consumption order, so a later batch's offsets are never committed
//! before an earlier batch is durable.

use std::{collections::BTreeMap, sync::Arc};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Message, OwnedMessage},
};
use tokio_util::sync::CancellationToken;

use super::{Abandoned, Job};
use crate::retry::{Gave, retry};

/// Commit attempts per batch; a commit still failing after them is left to the next
/// batch's commit (its offsets stay stored: never skipped, never ahead).
const COMMIT_ATTEMPTS: u32 = 5;

/// The offsets to store once every record of `msgs` is durable: per partition, one past
/// the highest offset seen (Kafka's "next record to read"), in a stable order.
pub fn next_offsets<'a>(
    msgs: impl IntoIterator<Item = &'a OwnedMessage>,
) -> Vec<(&'a str, i32, i64)> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in msgs {
        let entry = next.entry((m.topic(), m.partition())).or_insert(0);
        *entry = (*entry).max(m.offset() + 1);
    }
    next.into_iter().map(|((t, p), o)| (t, p, o)).collect()
}

impl Job {
    /// Stores the offsets past `msgs` and commits them, retrying a transient failure a few
    /// times. `Err` only when abandoned at the drain deadline.
    pub(super) async fn commit_batch<'a>(
        &self,
        msgs: impl IntoIterator<Item = &'a OwnedMessage>,
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
        // Gives up (not abandons) after COMMIT_ATTEMPTS: a child of `abandon` that the
        // last retry cancels, so the two endings stay apart.
        let give_up = abandon.child_token();
        let committed = retry(
            self.settings.backoff,
            &give_up,
            || async {
                let result = self.commit_stored().await;
                let label = if result.is_ok() { "ok" } else { "error" };
                self.metrics.commits.with_label_values(&[label]).inc();
                result
            },
            commit_retriable,
            |e, attempt, delay| {
                self.retrying("commit", e, attempt, delay);
                if attempt + 1 >= COMMIT_ATTEMPTS {
                    give_up.cancel();
                }
            },
        )
        .await;
        match committed {
            Ok(()) => Ok(()),
            Err(Gave::Up(e)) => {
                tracing::warn!(error = %e, "commit refused (group rebalancing); the next owner replays from the last commit");
                Ok(())
            }
            Err(Gave::Abandoned) if abandon.is_cancelled() => Err(Abandoned),
            Err(Gave::Abandoned) => {
                tracing::warn!(
                    attempts = COMMIT_ATTEMPTS,
                    "commit still failing; offsets stay stored and go with the next commit"
                );
                Ok(())
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn msg(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn next_offsets_are_one_past_the_highest_per_partition_whatever_the_order() {
        let msgs = [
            msg("potato", 0, 7),
            msg("potato", 1, 3),
            msg("potato", 0, 5),
            msg("tomato", 0, 0),
            msg("potato", 0, 9),
        ];
        assert_eq!(
            next_offsets(&msgs),
            [("potato", 0, 10), ("potato", 1, 4), ("tomato", 0, 1)]
        );
        assert!(next_offsets(&[]).is_empty());
    }
}
