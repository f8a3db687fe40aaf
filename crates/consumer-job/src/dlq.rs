//! Dead letters: the original record (key, value, headers) re-published to the dead-letter
//! topic with headers that say why and where it came from, so it can be inspected and
//! replayed. The job commits past a poison record only after this produce succeeded.
//! [`DeadLetter`], the header names and [`resend`] (a record's copy with its own headers)
//! live here, for the job and `dlq-replay` alike.

use std::time::Duration;

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};

/// Why a record is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Stable machine-readable cause (`invalid-json`, `oversized`, `mongo-rejected`, …).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Whether the value is left out of the dead letter (too large to re-send).
    pub omit_value: bool,
}

impl DeadLetter {
    /// A dead letter that keeps the value.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            omit_value: false,
        }
    }
}

/// Our own headers start with this; they are never forwarded (a record dead-lettered or
/// replayed again must not carry them twice).
const OWN_PREFIX: &str = "leafsync-";

/// A copy of `message` for `topic`: its key, its value unless `omit_value`, its headers
/// except ours, then `extra` headers.
pub fn resend<'a>(
    topic: &'a str,
    message: &'a OwnedMessage,
    extra: &[(&'a str, &'a str)],
    omit_value: bool,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter().filter(|h| !h.key.starts_with(OWN_PREFIX)) {
            headers = headers.insert(h);
        }
    }
    for (key, value) in extra {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if !omit_value {
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
    }
    record
}

/// Header names set on every dead letter.
pub mod header {
    /// Machine-readable cause, e.g. `invalid-json`.
    pub const REASON: &str = "leafsync-reason";
    /// Human-readable detail.
    pub const ERROR: &str = "leafsync-error";
    /// Topic the record was read from.
    pub const SOURCE_TOPIC: &str = "leafsync-source-topic";
    /// Its partition (decimal).
    pub const SOURCE_PARTITION: &str = "leafsync-source-partition";
    /// Its offset (decimal).
    pub const SOURCE_OFFSET: &str = "leafsync-source-offset";
    /// Present (with the value's size) when the value was left out.
    pub const VALUE_OMITTED: &str = "leafsync-value-omitted-bytes";
}

/// Builds the dead letter for `msg` and sends it to `topic`; waits for the broker's ack.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    msg: &OwnedMessage,
    letter: &DeadLetter,
) -> Result<(), KafkaError> {
    let omit = letter.omit_value;
    match produce(producer, topic, msg, letter, omit).await {
        // The broker may have a lower size limit than ours: keep the evidence, drop the bulk.
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize,
        )) if !omit => produce(producer, topic, msg, letter, true).await,
        other => other,
    }
}

async fn produce(
    producer: &FutureProducer,
    topic: &str,
    msg: &OwnedMessage,
    letter: &DeadLetter,
    omit_value: bool,
) -> Result<(), KafkaError> {
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let value_len = msg.payload().map_or(0, <[u8]>::len).to_string();
    let mut extra = vec![
        (header::REASON, letter.reason),
        (header::ERROR, letter.detail.as_str()),
        (header::SOURCE_TOPIC, msg.topic()),
        (header::SOURCE_PARTITION, partition.as_str()),
        (header::SOURCE_OFFSET, offset.as_str()),
    ];
    if omit_value {
        extra.push((header::VALUE_OMITTED, value_len.as_str()));
    }
    let record = resend(topic, msg, &extra, omit_value);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}
