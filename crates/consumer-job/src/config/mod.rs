//! The job's whole configuration: the `LEAFSYNC_*` environment read once into
//! [`JobConfig`] (flat, as envy fills it), then validated once into [`Settings`], the typed
//! value the job runs on: routes parsed, durations built, the Kafka, Mongo, batch,
//! decoding, retry and breaker groups apart. Nothing downstream re-parses a string.
//! Defaults fit the LIMS cluster.

use std::{net::SocketAddr, time::Duration};

pub use leafsync_core::runtime::LogFormat;
use leafsync_core::{CONSUMER_DB, CONSUMER_MONGO_URI, PlantType, WritePath};
use serde::{Deserialize, Serialize};

use crate::{decode::Limits, pipeline::Bounds, retry::Backoff};

mod routes;
pub use routes::{Route, Routes};

/// What to do with a record whose value is null (a Kafka tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TombstonePolicy {
    /// Send it to the dead-letter topic like any other unusable record (the default:
    /// LIMS deletes are soft, so a tombstone is unexpected and worth a look).
    DeadLetter,
    /// Count it (`leafsync_job_tombstones_skipped_total`), log it, and move on.
    Skip,
}

/// Configuration of `consumer-job`. Every field is `LEAFSYNC_<FIELD>` in upper case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct JobConfig {
    /// Kafka bootstrap servers (`host:port,…`).
    pub kafka_brokers: String,
    /// Consumer group id; all replicas share it and so share the partitions.
    pub kafka_group_id: String,
    /// `topic=collection` pairs, comma-separated.
    pub topics: String,
    /// Topic that receives records the job cannot apply.
    pub dlq_topic: String,
    /// Consumer session timeout; a dead replica's partitions move after this long.
    pub kafka_session_timeout_ms: u32,
    /// Longest gap between two polls before librdkafka leaves the group. The job polls
    /// on while it holds (partitions paused), so only a wedged process reaches it.
    pub kafka_max_poll_interval_ms: u32,
    /// How often librdkafka reports statistics (consumer lag metric).
    pub kafka_statistics_interval_ms: u32,
    /// Most KiB librdkafka prefetches ahead of the job, per assigned partition (its
    /// default, 64 MiB, would dominate the job's memory).
    pub kafka_queued_max_kbytes: u32,
    /// Longest a fetch waits at the broker for new records (librdkafka's
    /// `fetch.wait.max.ms`). Kafka answers as soon as a record arrives, so this bounds
    /// an idle fetch, not the latency of a new record.
    pub kafka_fetch_wait_max_ms: u32,
    /// MongoDB connection string (may hold credentials: never logged).
    pub mongo_uri: String,
    /// Consumer database.
    pub mongo_db: String,
    /// `auto` (each statement by the fastest command that keeps its outcome exact),
    /// `bulk-write` (MongoDB ≥ 8.0) or `update-command` (any MongoDB ≥ 3.6).
    pub mongo_write_path: WritePath,
    /// Most records in one batch (one bulk upsert).
    pub batch_max_messages: usize,
    /// Most bytes of record values in one batch.
    pub batch_max_bytes: usize,
    /// Record values larger than this are dead-lettered as `oversized` (value left out).
    /// `LEAFSYNC_MAX_EVENT_BYTES`, its earlier name, is read too.
    #[serde(alias = "max_event_bytes")]
    pub max_record_bytes: usize,
    /// Seconds an event's `updated_at` may be ahead of the job's clock; a later one is
    /// dead-lettered as `future-version` (a producer with a wrong clock would otherwise
    /// win over every real update to come).
    pub max_future_skew: u64,
    /// What to do with tombstones (null values).
    pub tombstone_policy: TombstonePolicy,
    /// First retry delay for transient faults; doubles up to `retry_max_ms`, with jitter.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Dead-letter circuit breaker: the number of most recent records it looks at.
    pub dlq_breaker_window: usize,
    /// When more than this share of the window would be dead-lettered, the job holds the
    /// stream (unready, nothing committed) instead of draining the topic into the DLQ.
    /// `1` turns the breaker off.
    pub dlq_breaker_max_share: f64,
    /// While the breaker is open (kept in the consumer DB, so restarts and other replicas
    /// see it), one record is tried this often: dead-lettered, the breaker stays open;
    /// applied, it closes.
    pub dlq_breaker_probe_interval_ms: u64,
    /// After SIGTERM, how long the in-flight batch may take before it is abandoned
    /// (uncommitted). Keep below Kubernetes' `terminationGracePeriodSeconds`.
    pub drain_timeout_ms: u64,
    /// Address of the `/metrics` and `/live` HTTP endpoint.
    pub metrics_addr: SocketAddr,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

/// What the Kafka consumer needs of the configuration, and nothing else. The environment
/// stays flat (`LEAFSYNC_KAFKA_*` beside the rest): envy cannot fill nested structs, and
/// serde's `flatten` would read every number as a string and refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Session timeout.
    pub session_timeout_ms: u32,
    /// Longest gap between polls.
    pub max_poll_interval_ms: u32,
    /// Statistics interval (lag metric).
    pub statistics_interval_ms: u32,
    /// Prefetch bound per partition, KiB.
    pub queued_max_kbytes: u32,
    /// Longest idle fetch wait.
    pub fetch_wait_max_ms: u32,
}

/// Where the job writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoSettings {
    /// Connection string (may hold credentials: never logged).
    pub uri: String,
    /// Consumer database.
    pub db: String,
    /// How batches reach the server.
    pub write_path: WritePath,
}

/// The dead-letter circuit breaker's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Records it looks back over.
    pub window: usize,
    /// Share of the window above which it opens.
    pub max_share: f64,
    /// How often an open breaker tries one record.
    pub probe_interval: Duration,
}

/// The validated configuration the job runs on; [`JobConfig::validate`] builds it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Topic → collection.
    pub routes: Routes,
    /// The consumer's client settings.
    pub kafka: KafkaSettings,
    /// The consumer DB.
    pub mongo: MongoSettings,
    /// Where unusable records go.
    pub dlq_topic: String,
    /// How large one batch may grow.
    pub bounds: Bounds,
    /// What decoding one record refuses.
    pub limits: Limits,
    /// Delays between retries of transient faults.
    pub backoff: Backoff,
    /// The dead-letter circuit breaker.
    pub breaker: BreakerSettings,
    /// After SIGTERM, how long the in-flight batch may take before it is abandoned.
    pub drain_timeout: Duration,
    /// Address of `/metrics`, `/live` and `/ready`.
    pub metrics_addr: SocketAddr,
    /// Log line format.
    pub log_format: LogFormat,
}

impl Settings {
    /// The longest the job takes from SIGTERM to exit: the drain, the final commit, the
    /// close and the runtime's exit, each bounded. Keep it under Kubernetes'
    /// `terminationGracePeriodSeconds`, or the pod is killed mid-shutdown.
    pub fn shutdown_bound(&self) -> Duration {
        self.drain_timeout + FINAL_COMMIT_BOUND + CLOSE_BOUND + EXIT_BOUND
    }
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            kafka_brokers: "kafka-service.leaf-image-management-system.svc.cluster.local:9092"
                .to_owned(),
            kafka_group_id: "leafsync-consumer-job".to_owned(),
            topics: PlantType::ALL
                .iter()
                .map(|p| format!("{}={}", p.as_str(), p.collection()))
                .collect::<Vec<_>>()
                .join(","),
            dlq_topic: "leafsync-dead-letter".to_owned(),
            kafka_session_timeout_ms: 10_000,
            kafka_max_poll_interval_ms: 300_000,
            kafka_statistics_interval_ms: 5_000,
            kafka_queued_max_kbytes: 2_048,
            kafka_fetch_wait_max_ms: 500,
            mongo_uri: CONSUMER_MONGO_URI.to_owned(),
            mongo_db: CONSUMER_DB.to_owned(),
            mongo_write_path: WritePath::Auto,
            batch_max_messages: 500,
            batch_max_bytes: 6 * 1024 * 1024,
            max_record_bytes: 1_000_000,
            max_future_skew: 300,
            tombstone_policy: TombstonePolicy::DeadLetter,
            retry_base_ms: 100,
            retry_max_ms: 10_000,
            dlq_breaker_window: 200,
            dlq_breaker_max_share: 0.5,
            dlq_breaker_probe_interval_ms: 300_000,
            drain_timeout_ms: 20_000,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9100)),
            log_format: LogFormat::Text,
        }
    }
}

pub use leafsync_core::env::{ConfigError, EnvConfig};

/// After the drain, the longest the final offset commit may take.
pub const FINAL_COMMIT_BOUND: Duration = Duration::from_secs(3);
/// Then the longest flushing the dead-letter producer and leaving the group may take.
pub const CLOSE_BOUND: Duration = Duration::from_secs(3);
/// Then the longest the runtime waits for its last threads before the process exits.
pub const EXIT_BOUND: Duration = Duration::from_secs(1);

impl EnvConfig for JobConfig {
    type Settings = Settings;

    /// Checks what serde cannot (non-empty names, sane sizes, a parseable topic map) and
    /// builds the [`Settings`].
    fn validate(self) -> Result<Settings, ConfigError> {
        let invalid = |var, problem: &str| Err(ConfigError::invalid(var, problem));
        if self.kafka_brokers.trim().is_empty() {
            return invalid("LEAFSYNC_KAFKA_BROKERS", "must not be empty");
        }
        if self.kafka_group_id.trim().is_empty() {
            return invalid("LEAFSYNC_KAFKA_GROUP_ID", "must not be empty");
        }
        if self.dlq_topic.trim().is_empty() {
            return invalid("LEAFSYNC_DLQ_TOPIC", "must not be empty");
        }
        if self.kafka_max_poll_interval_ms < self.kafka_session_timeout_ms {
            return invalid(
                "LEAFSYNC_KAFKA_MAX_POLL_INTERVAL_MS",
                "must be at least LEAFSYNC_KAFKA_SESSION_TIMEOUT_MS (librdkafka refuses less)",
            );
        }
        if self.kafka_fetch_wait_max_ms == 0 {
            return invalid("LEAFSYNC_KAFKA_FETCH_WAIT_MAX_MS", "must be at least 1");
        }
        if self.batch_max_messages == 0 {
            return invalid("LEAFSYNC_BATCH_MAX_MESSAGES", "must be at least 1");
        }
        if self.max_record_bytes == 0 {
            return invalid("LEAFSYNC_MAX_RECORD_BYTES", "must be at least 1");
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return invalid(
                "LEAFSYNC_RETRY_MAX_MS",
                "need 0 < LEAFSYNC_RETRY_BASE_MS <= LEAFSYNC_RETRY_MAX_MS",
            );
        }
        if self.mongo_db.trim().is_empty() {
            return invalid("LEAFSYNC_MONGO_DB", "must not be empty");
        }
        if self.dlq_breaker_window == 0 {
            return invalid("LEAFSYNC_DLQ_BREAKER_WINDOW", "must be at least 1");
        }
        if !(self.dlq_breaker_max_share > 0.0 && self.dlq_breaker_max_share <= 1.0) {
            return invalid(
                "LEAFSYNC_DLQ_BREAKER_MAX_SHARE",
                "must be above 0 and at most 1 (1 turns the breaker off)",
            );
        }
        leafsync_core::env::check_mongo_uri(&self.mongo_uri)?;
        let routes: Routes = self.topics.parse()?;
        if routes.get(&self.dlq_topic).is_some() {
            return invalid(
                "LEAFSYNC_DLQ_TOPIC",
                "must not be one of the consumed topics",
            );
        }
        Ok(Settings {
            routes,
            kafka: KafkaSettings {
                brokers: self.kafka_brokers,
                group_id: self.kafka_group_id,
                session_timeout_ms: self.kafka_session_timeout_ms,
                max_poll_interval_ms: self.kafka_max_poll_interval_ms,
                statistics_interval_ms: self.kafka_statistics_interval_ms,
                queued_max_kbytes: self.kafka_queued_max_kbytes,
                fetch_wait_max_ms: self.kafka_fetch_wait_max_ms,
            },
            mongo: MongoSettings {
                uri: self.mongo_uri,
                db: self.mongo_db,
                write_path: self.mongo_write_path,
            },
            dlq_topic: self.dlq_topic,
            bounds: Bounds {
                max_records: self.batch_max_messages,
                max_bytes: self.batch_max_bytes,
            },
            limits: Limits {
                max_record_bytes: self.max_record_bytes,
                tombstones: self.tombstone_policy,
                max_future_skew: Duration::from_secs(self.max_future_skew),
            },
            backoff: Backoff {
                base: Duration::from_millis(self.retry_base_ms),
                max: Duration::from_millis(self.retry_max_ms),
            },
            breaker: BreakerSettings {
                window: self.dlq_breaker_window,
                max_share: self.dlq_breaker_max_share,
                probe_interval: Duration::from_millis(self.dlq_breaker_probe_interval_ms),
            },
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            metrics_addr: self.metrics_addr,
            log_format: self.log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use leafsync_test_support::vars;

    #[test]
    fn defaults_point_at_the_lims_cluster_and_its_three_topics() {
        let settings = JobConfig::from_vars(vars(&[])).unwrap();
        assert!(
            settings.kafka.brokers.ends_with(":9092"),
            "in-cluster Kafka is 9092, not 9093"
        );
        assert_eq!(settings.mongo.db, "imagedbplantconsumer");
        let routes: Vec<&std::sync::Arc<Route>> = settings.routes.iter().collect();
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[0].topic, "potato");
        assert_eq!(routes[0].collection.as_str(), "imagecolplantpotato");
        assert_eq!(routes[0].label, "potato");
    }

    #[test]
    fn environment_values_override_the_defaults() {
        let settings = JobConfig::from_vars(vars(&[
            ("LEAFSYNC_KAFKA_BROKERS", "127.0.0.1:9092"),
            ("LEAFSYNC_TOPICS", "t1=imagecolplanttomato, t2=other"),
            ("LEAFSYNC_BATCH_MAX_MESSAGES", "7"),
            ("LEAFSYNC_TOMBSTONE_POLICY", "skip"),
            ("LEAFSYNC_MONGO_WRITE_PATH", "bulk-write"),
            ("LEAFSYNC_LOG_FORMAT", "json"),
        ]))
        .unwrap();
        assert_eq!(settings.bounds.max_records, 7);
        assert_eq!(settings.limits.tombstones, TombstonePolicy::Skip);
        assert_eq!(settings.mongo.write_path, WritePath::BulkWrite);
        let labels: Vec<&str> = settings.routes.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["tomato", "other"]);
        assert_eq!(
            settings.routes.get("t2").unwrap().collection.as_str(),
            "other"
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("LEAFSYNC_BATCH_MAX_MESSAGES", "many"),
            ("LEAFSYNC_BATCH_MAX_MESSAGES", "0"),
            ("LEAFSYNC_TOPICS", "potato"),
            ("LEAFSYNC_TOPICS", ""),
            ("LEAFSYNC_TOPICS", "potato=a$b"),
            ("LEAFSYNC_TOPICS", "potato=a,potato=b"),
            ("LEAFSYNC_MONGO_URI", "http://x"),
            ("LEAFSYNC_METRICS_ADDR", "nowhere"),
            ("LEAFSYNC_TOMBSTONE_POLICY", "ignore"),
            ("LEAFSYNC_DLQ_TOPIC", "potato"),
        ] {
            let err = JobConfig::from_vars(vars(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value:?} gave {err:?}");
        }
    }

    #[test]
    fn only_keeps_the_plants_asked_for_and_names_the_known_ones() {
        let mut routes = JobConfig::default().topics.parse::<Routes>().unwrap();
        assert!(
            routes
                .only(&["corn".to_owned()])
                .unwrap_err()
                .contains("potato, tomato, pepper")
        );
        routes.only(&["tomato".to_owned()]).unwrap();
        assert_eq!(routes.topics(), ["tomato"]);
    }
}
