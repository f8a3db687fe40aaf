//! The fetch stage: takes records as they arrive, decides each one's fate
//! ([`crate::decode::decide`]), and gathers them into the batch the write stage asks for
//! next. While the writer holds, it pauses the assignment once its batch is full and
//! polls on, so the member keeps its place in the group and the lag metric stays alive.

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use rdkafka::{consumer::Consumer, error::KafkaError, message::Message};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Batch, Job, Record};
use crate::decode::{self, Decision};

/// How long the fetch stage waits with a full batch the writer does not take before it
/// pauses the partitions and polls on (a writer that is only busy takes it sooner).
const PAUSE_AFTER: Duration = Duration::from_secs(1);

impl Job {
    /// Gathers records until the write stage asks, then hands over what it has (after
    /// taking whatever else is ready, without waiting). A full batch the writer does not
    /// take within [`PAUSE_AFTER`] pauses the assigned partitions; polling goes on (so
    /// the group, the statistics and rebalances stay alive) and what still arrives is
    /// kept; the partitions resume once the batch is taken, from the first record not
    /// yet received. Stops at shutdown; a batch it still holds then was never written,
    /// so its offsets were never committed.
    pub(super) async fn fetch_stage(
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
                _ = lag_tick.tick(), if paused => {
                    // Its broker reads are bounded, but not by shutdown: race them.
                    tokio::select! {
                        () = self.refresh_lag() => {}
                        () = shutdown.cancelled() => return,
                    }
                }
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
}
