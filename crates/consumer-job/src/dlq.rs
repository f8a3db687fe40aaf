//! Dead letters: the original record (key, value, headers) re-published to the dead-letter
//! topic with headers that say why and where it came from, so it can be inspected and
//! replayed. The job commits past a poison record only after this produce succeeded.

use std::time::Duration;

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};

use crate::decode::DeadLetter;

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
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            if !h.key.starts_with("leafsync-") {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    let value_len = msg.payload().map_or(0, <[u8]>::len).to_string();
    headers = headers
        .insert(Header {
            key: header::REASON,
            value: Some(letter.reason),
        })
        .insert(Header {
            key: header::ERROR,
            value: Some(letter.detail.as_str()),
        })
        .insert(Header {
            key: header::SOURCE_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: header::SOURCE_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: header::SOURCE_OFFSET,
            value: Some(offset.as_str()),
        });
    if omit_value {
        headers = headers.insert(Header {
            key: header::VALUE_OMITTED,
            value: Some(value_len.as_str()),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if !omit_value {
        if let Some(value) = msg.payload() {
            record = record.payload(value);
        }
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}
