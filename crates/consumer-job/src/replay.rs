//! Replaying the dead-letter topic: every dead letter carries its original key, value and
//! headers plus where it came from (see [`crate::dlq`]), so once the cause is fixed (a
//! parser bug, a MongoDB that refused a write, a too-small size limit) the operator sends
//! the records back to their source topics and the job applies them like any other event.
//!
//! Reading is bounded: the end of each dead-letter partition is taken when the replay
//! starts, so records the job dead-letters again during the replay (still poison) are not
//! replayed in a loop. No consumer group is used and no offset is committed: a replay is
//! an operator's explicit act, repeated replays are harmless for versioned events (the
//! job's stale guard refuses what is older than the stored image), and `--from-offset`
//! skips what an earlier replay already sent.

use std::{collections::BTreeMap, fmt, time::Duration};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::{Headers, OwnedMessage},
    producer::FutureProducer,
};

use crate::dlq::header;

/// Header set on a replayed record: `dlq-topic[partition]@offset` it was replayed from.
/// (A `leafsync-` header, so a record dead-lettered again does not carry it twice.)
pub const REPLAYED_FROM: &str = "leafsync-replayed-from";

const TIMEOUT: Duration = Duration::from_secs(30);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Only dead letters with one of these `leafsync-reason`s (all when empty).
    pub reasons: Vec<String>,
    /// Only dead letters from one of these source topics (all when empty).
    pub source_topics: Vec<String>,
    /// Start at this offset in every dead-letter partition (0: from the beginning).
    pub from_offset: i64,
    /// Report what would be replayed, produce nothing.
    pub dry_run: bool,
}

/// Why a dead letter was not replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its reason or source topic is not among those asked for.
    Filtered,
    /// The value was left out when it was dead-lettered (it was this many bytes).
    ValueOmitted(String),
    /// It has no `leafsync-source-topic` header: not written by consumer-job.
    NoSourceTopic,
}

/// One dead letter and what the replay did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `partition@offset` in the dead-letter topic.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its `leafsync-reason` (empty if absent).
    pub reason: String,
    /// Its `leafsync-source-topic` (empty if absent).
    pub source_topic: String,
    /// `Ok((partition, offset))` where it was produced in the source topic (`None` on a
    /// dry run), or why it was skipped.
    pub result: Result<Option<(i32, i64)>, Skip>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = format!(
            "[{}]@{} ({}, from {})",
            self.partition, self.offset, self.reason, self.source_topic
        );
        match &self.result {
            Ok(Some((p, o))) => write!(f, "replayed {at} -> {}[{p}]@{o}", self.source_topic),
            Ok(None) => write!(f, "would replay {at} -> {}", self.source_topic),
            Err(Skip::Filtered) => write!(f, "filtered {at}"),
            Err(Skip::ValueOmitted(bytes)) => write!(
                f,
                "NOT replayable {at}: its {bytes}-byte value was left out of the dead letter"
            ),
            Err(Skip::NoSourceTopic) => {
                write!(f, "NOT replayable {at}: no {} header", header::SOURCE_TOPIC)
            }
        }
    }
}

/// Totals of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Dead letters read.
    pub read: u64,
    /// Sent back (or, on a dry run, that would be).
    pub replayed: u64,
    /// Left out by the filters.
    pub filtered: u64,
    /// Matching the filters but impossible to replay.
    pub not_replayable: u64,
    /// Whether this was a dry run (nothing was produced).
    pub dry_run: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let replayed = if self.dry_run {
            "to replay (dry run)"
        } else {
            "replayed"
        };
        write!(
            f,
            "{} dead letter(s) read: {} {replayed}, {} filtered out, {} not replayable",
            self.read, self.replayed, self.filtered, self.not_replayable
        )
    }
}

/// Failures that stop a replay. Records reported before it are already in their source
/// topics: rerun with `--from-offset` past the last one reported.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Kafka client creation, metadata, watermarks or fetch.
    #[error("reading the dead-letter topic {topic:?}: {source}")]
    Read {
        /// The dead-letter topic.
        topic: String,
        /// The client error.
        source: KafkaError,
    },
    /// The dead-letter topic does not exist.
    #[error("the dead-letter topic {0:?} does not exist")]
    NoTopic(String),
    /// The broker refused or timed out a replayed record.
    #[error("producing dead letter [{partition}]@{offset} to {topic:?}: {source}")]
    Produce {
        /// Source topic.
        topic: String,
        /// Dead-letter partition.
        partition: i32,
        /// Dead-letter offset.
        offset: i64,
        /// The client error.
        source: KafkaError,
    },
}

/// Replays the dead letters `options` select, calling `report` for each one read, in
/// order (per partition). Returns the totals.
pub async fn replay(
    options: &ReplayOptions,
    mut report: impl FnMut(&Outcome),
) -> Result<Summary, ReplayError> {
    let read_err = |source| ReplayError::Read {
        topic: options.dlq_topic.clone(),
        source,
    };
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        // Required by librdkafka even though nothing joins or commits.
        .set("group.id", "leafsync-dlq-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.message.max.bytes", "16777216")
        .create()
        .map_err(read_err)?;
    let ends = partition_ends(&consumer, options).map_err(read_err)?;
    if ends.is_empty() {
        return Err(ReplayError::NoTopic(options.dlq_topic.clone()));
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("client.id", "leafsync-dlq-replay")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .set("message.max.bytes", "16777216")
        .create()
        .map_err(read_err)?;

    let mut positions = TopicPartitionList::new();
    let mut pending = BTreeMap::new();
    for (&partition, &(low, high)) in &ends {
        let start = options.from_offset.max(low);
        if start < high {
            positions
                .add_partition_offset(&options.dlq_topic, partition, Offset::Offset(start))
                .map_err(read_err)?;
            pending.insert(partition, high);
        }
    }
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Summary::default()
    };
    if pending.is_empty() {
        return Ok(summary);
    }
    consumer.assign(&positions).map_err(read_err)?;
    while !pending.is_empty() {
        let Ok(message) = tokio::time::timeout(TIMEOUT, consumer.recv()).await else {
            return Err(read_err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            )));
        };
        let message = message.map_err(read_err)?.detach();
        let partition = message.partition();
        let Some(&high) = pending.get(&partition) else {
            continue;
        };
        if message.offset() >= high {
            pending.remove(&partition);
            continue;
        }
        let outcome = replay_one(&producer, options, &message).await?;
        summary.read += 1;
        match outcome.result {
            Ok(_) => summary.replayed += 1,
            Err(Skip::Filtered) => summary.filtered += 1,
            Err(_) => summary.not_replayable += 1,
        }
        report(&outcome);
        if message.offset() + 1 >= high {
            pending.remove(&partition);
        }
    }
    Ok(summary)
}

/// `partition -> (low, high)` watermarks of the dead-letter topic, taken once.
fn partition_ends(
    consumer: &StreamConsumer,
    options: &ReplayOptions,
) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(&options.dlq_topic), TIMEOUT)?;
    let mut ends = BTreeMap::new();
    for topic in metadata.topics() {
        if topic.name() != options.dlq_topic || topic.error().is_some() {
            continue;
        }
        for p in topic.partitions() {
            let marks = consumer.fetch_watermarks(&options.dlq_topic, p.id(), TIMEOUT)?;
            ends.insert(p.id(), marks);
        }
    }
    Ok(ends)
}

async fn replay_one(
    producer: &FutureProducer,
    options: &ReplayOptions,
    message: &OwnedMessage,
) -> Result<Outcome, ReplayError> {
    let text = |name| header_text(message, name);
    let mut outcome = Outcome {
        partition: message.partition(),
        offset: message.offset(),
        reason: text(header::REASON).unwrap_or_default(),
        source_topic: text(header::SOURCE_TOPIC).unwrap_or_default(),
        result: Ok(None),
    };
    let selected = (options.reasons.is_empty() || options.reasons.contains(&outcome.reason))
        && (options.source_topics.is_empty()
            || options.source_topics.contains(&outcome.source_topic));
    outcome.result = if !selected {
        Err(Skip::Filtered)
    } else if let Some(bytes) = text(header::VALUE_OMITTED) {
        Err(Skip::ValueOmitted(bytes))
    } else if outcome.source_topic.is_empty() {
        Err(Skip::NoSourceTopic)
    } else if options.dry_run {
        Ok(None)
    } else {
        Ok(Some(
            produce(producer, options, message, &outcome.source_topic).await?,
        ))
    };
    Ok(outcome)
}

/// Sends the original record (key, value, the headers that are not leafsync's) back to
/// `topic`, marked with [`REPLAYED_FROM`].
async fn produce(
    producer: &FutureProducer,
    options: &ReplayOptions,
    message: &OwnedMessage,
    topic: &str,
) -> Result<(i32, i64), ReplayError> {
    let origin = format!(
        "{}[{}]@{}",
        options.dlq_topic,
        message.partition(),
        message.offset()
    );
    let record = crate::dlq::resend(topic, message, &[(REPLAYED_FROM, origin.as_str())], false);
    let delivery = producer
        .send(record, TIMEOUT)
        .await
        .map_err(|(source, _)| ReplayError::Produce {
            topic: topic.to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            source,
        })?;
    Ok((delivery.partition, delivery.offset))
}

fn header_text(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: Result<Option<(i32, i64)>, Skip>) -> String {
        Outcome {
            partition: 0,
            offset: 7,
            reason: "invalid-date".into(),
            source_topic: "potato".into(),
            result,
        }
        .to_string()
    }

    #[test]
    fn each_outcome_reads_as_a_line_an_operator_can_act_on() {
        assert_eq!(
            outcome(Ok(Some((0, 42)))),
            "replayed [0]@7 (invalid-date, from potato) -> potato[0]@42"
        );
        assert_eq!(
            outcome(Ok(None)),
            "would replay [0]@7 (invalid-date, from potato) -> potato"
        );
        assert_eq!(
            outcome(Err(Skip::ValueOmitted("2000000".into()))),
            "NOT replayable [0]@7 (invalid-date, from potato): its 2000000-byte value was left out of the dead letter"
        );
        let summary = Summary {
            read: 4,
            replayed: 2,
            filtered: 1,
            not_replayable: 1,
            dry_run: false,
        };
        assert_eq!(
            summary.to_string(),
            "4 dead letter(s) read: 2 replayed, 1 filtered out, 1 not replayable"
        );
        let dry = Summary {
            dry_run: true,
            ..summary
        };
        assert_eq!(
            dry.to_string(),
            "4 dead letter(s) read: 2 to replay (dry run), 1 filtered out, 1 not replayable"
        );
    }
}
