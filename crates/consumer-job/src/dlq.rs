//! Dead letters: the original record (key, value, headers) re-published to the dead-letter
//! topic with headers that say why and where it came from, so it can be inspected and
//! replayed. The job commits past a poison record only after this produce succeeded.
//! [`DeadLetter`], the header names and [`resend`] (a record's copy with its own headers)
//! live here, for the job and `dlq-replay` alike.

use std::time::Duration;

use leafsync_core::EventError;
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};

/// Why a record is dead-lettered: the `leafsync-reason` header and the `reason` label of
/// `leafsync_job_dead_lettered_total`. The one list of reasons; the table of them in
/// docs/operations.md ("Dead letters and replaying them") is checked against
/// [`DeadLetterReason::ALL`] (`tools/repo-checks/tests/readme.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The record's topic is not in `LEAFSYNC_TOPICS`.
    UnknownTopic,
    /// A null value, under `LEAFSYNC_TOMBSTONE_POLICY=dead-letter`.
    Tombstone,
    /// The value is larger than the job accepts.
    Oversized,
    /// Not JSON.
    InvalidJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No `id`.
    MissingId,
    /// An `id` that is not a non-negative integer.
    InvalidId,
    /// `data` is not hex.
    InvalidHex,
    /// A date that is not an ISO-8601 date-time.
    InvalidDate,
    /// A known field of the wrong JSON type.
    WrongType,
    /// A field name MongoDB cannot store.
    InvalidFieldName,
    /// `updated_at` further ahead of the job's clock than `LEAFSYNC_MAX_FUTURE_SKEW`.
    FutureVersion,
    /// MongoDB refused the write for this document's sake.
    MongoRejected,
    /// A unique index other than `id`'s refused the document (header `leafsync-index`).
    DuplicateKey,
}

impl DeadLetterReason {
    /// Every reason, for documentation checks.
    pub const ALL: [DeadLetterReason; 14] = [
        Self::UnknownTopic,
        Self::Tombstone,
        Self::Oversized,
        Self::InvalidJson,
        Self::NotAnObject,
        Self::MissingId,
        Self::InvalidId,
        Self::InvalidHex,
        Self::InvalidDate,
        Self::WrongType,
        Self::InvalidFieldName,
        Self::FutureVersion,
        Self::MongoRejected,
        Self::DuplicateKey,
    ];

    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTopic => "unknown-topic",
            Self::Tombstone => "tombstone",
            Self::Oversized => "oversized",
            Self::InvalidJson => "invalid-json",
            Self::NotAnObject => "not-an-object",
            Self::MissingId => "missing-id",
            Self::InvalidId => "invalid-id",
            Self::InvalidHex => "invalid-hex",
            Self::InvalidDate => "invalid-date",
            Self::WrongType => "wrong-type",
            Self::InvalidFieldName => "invalid-field-name",
            Self::FutureVersion => "future-version",
            Self::MongoRejected => "mongo-rejected",
            Self::DuplicateKey => "duplicate-key",
        }
    }
}

impl From<&EventError> for DeadLetterReason {
    fn from(e: &EventError) -> Self {
        match e {
            EventError::InvalidJson(_) => Self::InvalidJson,
            EventError::NotAnObject => Self::NotAnObject,
            EventError::MissingId => Self::MissingId,
            EventError::InvalidId(_) => Self::InvalidId,
            EventError::InvalidHex { .. } => Self::InvalidHex,
            EventError::InvalidDate { .. } => Self::InvalidDate,
            EventError::WrongType { .. } => Self::WrongType,
            EventError::InvalidFieldName(_) => Self::InvalidFieldName,
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Stable machine-readable cause.
    pub reason: DeadLetterReason,
    /// Human-readable detail.
    pub detail: String,
    /// Whether the value is left out of the dead letter (too large to re-send).
    pub omit_value: bool,
    /// Headers that say more about this reason (e.g. the index of a duplicate key).
    pub headers: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// A dead letter that keeps the value.
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            omit_value: false,
            headers: Vec::new(),
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
    /// `future-version`: how many seconds `updated_at` was ahead of the job's clock.
    pub const FUTURE_SKEW: &str = "leafsync-future-skew-seconds";
    /// `duplicate-key`: the unique index the document collided on.
    pub const INDEX: &str = "leafsync-index";
    /// `duplicate-key` and `mongo-rejected`: the server's error code.
    pub const CODE: &str = "leafsync-mongo-code";
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
        (header::REASON, letter.reason.as_str()),
        (header::ERROR, letter.detail.as_str()),
        (header::SOURCE_TOPIC, msg.topic()),
        (header::SOURCE_PARTITION, partition.as_str()),
        (header::SOURCE_OFFSET, offset.as_str()),
    ];
    if omit_value {
        extra.push((header::VALUE_OMITTED, value_len.as_str()));
    }
    extra.extend(letter.headers.iter().map(|(k, v)| (*k, v.as_str())));
    let record = resend(topic, msg, &extra, omit_value);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}
