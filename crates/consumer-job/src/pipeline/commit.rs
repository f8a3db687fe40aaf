//! Committing: a batch's offsets are *stored* only after every record of it reached
//! MongoDB or the dead-letter topic, and batches reach this one at a time, in consumption
//! order, so no stored offset is ever ahead of what is durable. The *commit* of what is
//! stored ([`Job::commit_stored_offsets`]) runs while the write stage writes the next
//! batch, not between the two batches: one commit at a time, each carrying every offset
//! stored before it started.

use std::{collections::BTreeMap, sync::Arc};

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Message, OwnedMessage},
};
use tokio_util::sync::CancellationToken;

use super::Job;
use crate::retry::{Gave, retry};

/// Attempts per commit; one still failing after them is left to the next commit (its
/// offsets stay stored: never skipped, never ahead).
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
    /// Stores the offsets past `msgs` (of partitions still assigned), for the next
    /// commit. Called once every record of `msgs` is durable.
    pub(super) fn store_batch<'a>(&self, msgs: impl IntoIterator<Item = &'a OwnedMessage>) {
        // Only partitions still assigned: a batch written across a rebalance stores what
        // this member still owns (the new owner of the rest replays from its commit).
        let owned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in next_offsets(msgs) {
            if owned.find_partition(topic, partition).is_none() {
                continue;
            }
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::error!(error = %e, topic, partition, "cannot build the offset list");
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partitions were revoked meanwhile; their new owner replays from the last commit.
            tracing::info!(error = %e, "offsets not stored (partitions no longer assigned)");
        }
    }

    /// Commits what is stored, retrying a transient failure a few times; one still
    /// failing is left to the next commit (the offsets stay stored: never skipped, never
    /// ahead). Ends early when `abandon` fires (the drain deadline).
    pub(super) async fn commit_stored_offsets(&self, abandon: &CancellationToken) {
        // Gives up (not abandons) after COMMIT_ATTEMPTS: a child of `abandon` that the
        // last retry cancels, so the two endings stay apart.
        let give_up = abandon.child_token();
        let committed = retry(
            self.settings.backoff,
            &give_up,
            || async {
                let started = std::time::Instant::now();
                let result = self.commit_stored().await;
                self.metrics
                    .commit_duration
                    .observe(started.elapsed().as_secs_f64());
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
            Ok(()) => {}
            Err(Gave::Up(e)) => {
                tracing::warn!(error = %e, "commit refused (group rebalancing); the next owner replays from the last commit");
            }
            Err(Gave::Abandoned) if abandon.is_cancelled() => {}
            Err(Gave::Abandoned) => tracing::warn!(
                attempts = COMMIT_ATTEMPTS,
                "commit still failing; offsets stay stored and go with the next commit"
            ),
        }
    }

    /// `commit_consumer_state(Sync)` off the async threads (it blocks on the broker), on a
    /// thread of its own rather than tokio's blocking pool: a sync commit waits for the
    /// group coordinator with no bound of its own, and a runtime that shuts down waits for
    /// every blocking-pool task, so one commit stuck on a vanished cluster would hold the
    /// process (or a test) forever. Dropped (abandoned, timed out), this future leaves
    /// the thread to finish, or to end with the process.
    pub(super) async fn commit_stored(&self) -> Result<(), KafkaError> {
        let consumer = Arc::clone(&self.consumer);
        let (done, result) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("leafsync-commit".to_owned())
            .spawn(move || {
                let result = consumer.commit_consumer_state(CommitMode::Sync);
                // Before answering: the job's own drop of the consumer at shutdown must be
                // the last one, so the consumer closes (and leaves the group) there.
                drop(consumer);
                let _ = done.send(result);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the commit thread");
            return Err(KafkaError::Canceled);
        }
        match result.await {
            Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KafkaError::Canceled),
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
