//! The Kafka side: client settings that make at-least-once hold (no auto commit, no auto
//! offset store), and the consumer context that commits on revoke, reports rebalances,
//! keeps partitions paused while the job holds, and turns librdkafka's statistics into
//! the consumer-lag gauge.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use rdkafka::{
    ClientConfig, ClientContext, Statistics, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult, RDKafkaErrorCode},
    producer::FutureProducer,
};

use crate::{config::KafkaSettings, metrics::JobMetrics};

/// The consumer's context: rebalance hooks and statistics.
pub struct JobContext {
    metrics: JobMetrics,
    flow: Arc<Flow>,
}

/// What the fetch stage and the rebalance hooks share: whether fetching is paused (the
/// writer holds), so partitions assigned meanwhile are paused too, and a count of
/// rebalances, so the fetch stage knows to drop records of partitions it lost.
#[derive(Debug, Default)]
pub struct Flow {
    paused: AtomicBool,
    rebalances: AtomicU64,
}

impl Flow {
    /// Whether fetching is paused.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Marks fetching paused or not.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Rebalances so far.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
    }
}

impl ClientContext for JobContext {
    fn stats(&self, statistics: Statistics) {
        if self.flow.is_paused() {
            // Paused partitions are not fetched, so librdkafka no longer learns their
            // ends: the fetch stage reads the lag from the broker meanwhile.
            return;
        }
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                if partition >= 0 && p.desired && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error (librdkafka retries it)");
    }
}

impl ConsumerContext for JobContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                // Offsets are stored only after their side effect, so committing them now
                // hands the next owner exactly the work that is done.
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "commit on revoke failed; the next owner replays from the last commit");
                    }
                }
                for elem in tpl.elements() {
                    let _ = self
                        .metrics
                        .consumer_lag
                        .remove_label_values(&[elem.topic(), &elem.partition().to_string()]);
                }
                tracing::info!(partitions = %describe(tpl), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.flow.rebalances.fetch_add(1, Ordering::SeqCst);
        if let (Rebalance::Assign(tpl), true) = (rebalance, self.flow.is_paused()) {
            // The job holds: new partitions wait too (their records would only pile up).
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!(error = %e, "cannot pause the partitions just assigned");
            }
        }
        let owned = consumer.assignment().map_or(0, |tpl| tpl.count());
        self.metrics
            .assigned_partitions
            .set(i64::try_from(owned).unwrap_or(i64::MAX));
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer's settings: manual offset store and commit, earliest reset (a new group
/// first copies what is already in the topics, as the batch synchronizer's first run
/// does), bounded prefetch.
pub fn consumer_config(config: &KafkaSettings) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("client.id", "leafsync-consumer-job")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        // The fetch stage polls on while the job holds (partitions paused), so the member
        // keeps its place however long an outage lasts; this bounds a wedged process.
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            config.statistics_interval_ms.to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            config.queued_max_kbytes.to_string(),
        )
        .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
        // One fetch brings at most the prefetch bound (its default, 50 MB, would bring
        // that much at once from a topic of large records); a record larger than the
        // bound still comes, alone (KIP-74), so any record the broker allows goes through.
        .set(
            "fetch.max.bytes",
            (u64::from(config.queued_max_kbytes) * 1024).to_string(),
        )
        // Once the prefetch bound is reached librdkafka pauses a partition's fetching for
        // this long (1 s by default): with a small bound that idled the writer for most of
        // a backlog drain. Refill as soon as the job has taken records.
        .set("fetch.queue.backoff.ms", "10")
        // Round robin spreads LIMS's three one-partition topics over the replicas (the
        // default `range` hands all three to one member); `range` stays listed so a rolling
        // update can form a group with replicas of the previous version.
        .set("partition.assignment.strategy", "roundrobin,range")
        .set_log_level(RDKafkaLogLevel::Warning);
    client
}

/// The stream consumer over [`consumer_config`], sharing `flow` with the fetch stage.
pub fn consumer(
    config: &KafkaSettings,
    metrics: JobMetrics,
    flow: Arc<Flow>,
) -> KafkaResult<StreamConsumer<JobContext>> {
    consumer_config(config).create_with_context(JobContext { metrics, flow })
}

/// The dead-letter producer: waits for all in-sync replicas, fails a send after 30 s so
/// the job's own retry loop (with backoff and shutdown awareness) takes over.
/// Its size limit leaves room for any record up to `max_record_bytes` plus our headers.
pub fn producer(brokers: &str, max_record_bytes: usize) -> KafkaResult<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "leafsync-consumer-job-dlq")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set(
            "message.max.bytes",
            (max_record_bytes.max(1_000_000) + 64 * 1024).to_string(),
        )
        .set_log_level(RDKafkaLogLevel::Warning)
        .create()
}

/// Creates the dead-letter topic if the broker lacks it (a broker without auto-creation
/// would otherwise make every dead letter wait forever). Failure is only a warning.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: KafkaResult<AdminClient<DefaultClientContext>> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let admin = match admin {
        Ok(admin) => admin,
        Err(e) => {
            tracing::warn!(error = %e, topic, "cannot create an admin client to check the topic");
            return;
        }
    };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    // -1: the broker's default replication factor (KIP-464). A fixed 1 would keep the dead
    // letters on one disk, and fail every send where `min.insync.replicas` is 2.
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    match tokio::time::timeout(
        Duration::from_secs(15),
        admin.create_topics([&new], &options),
    )
    .await
    {
        Ok(Ok(results)) => match results.into_iter().next() {
            Some(Ok(_)) => tracing::info!(topic, "created the dead-letter topic"),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => {}
            Some(Err((_, code))) => {
                tracing::warn!(topic, %code, "could not create the dead-letter topic");
            }
        },
        Ok(Err(e)) => tracing::warn!(topic, error = %e, "could not create the dead-letter topic"),
        Err(_) => tracing::warn!(topic, "broker did not answer CreateTopics within 15 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvConfig, JobConfig};

    #[test]
    fn offsets_move_only_by_hand_and_prefetch_is_bounded_by_config() {
        let settings = JobConfig {
            kafka_queued_max_kbytes: 4096,
            ..JobConfig::default()
        }
        .validate()
        .unwrap();
        let client = consumer_config(&settings.kafka);
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(client.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("4096"));
        assert_eq!(client.get("fetch.max.bytes"), Some("4194304"));
        assert_eq!(client.get("session.timeout.ms"), Some("10000"));
        assert_eq!(client.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(client.get("fetch.queue.backoff.ms"), Some("10"));
    }

    #[test]
    fn partitions_are_spread_round_robin_so_one_partition_topics_reach_every_replica() {
        let client = consumer_config(&JobConfig::default().validate().unwrap().kafka);
        assert_eq!(
            client.get("partition.assignment.strategy"),
            Some("roundrobin,range")
        );
    }
}
