//! Batch assembly, kept apart from I/O: what a batch holds, when it is full, and which
//! offsets committing it stores. The loop in [`super`] feeds it records as they arrive.
//!
//! There is no timer: a batch is whatever has arrived by the time the writer is free. When
//! idle that is one record, written at once; under load records pile up while the previous
//! batch is written, so batches grow with the load, up to the count and byte bounds.

use std::collections::BTreeMap;

use rdkafka::message::{Message, OwnedMessage};

use crate::decode::Decision;

/// One consumed record and what [`crate::decode::decide`] made of it.
#[derive(Debug)]
pub struct Record {
    /// The record as consumed (kept for its dead letter, if it needs one).
    pub msg: OwnedMessage,
    /// Its fate.
    pub decision: Decision,
}

/// Records in consumption order, bounded by count and value bytes.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, in the order they were consumed.
    pub records: Vec<Record>,
    bytes: usize,
}

/// The bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most records.
    pub max_records: usize,
    /// Most bytes of record values (the batch closes once it reaches this).
    pub max_bytes: usize,
}

impl Batch {
    /// Adds a record.
    pub fn push(&mut self, record: Record) {
        self.bytes += record.msg.payload().map_or(0, <[u8]>::len);
        self.records.push(record);
    }

    /// Whether the batch takes no more records.
    pub fn is_full(&self, bounds: Bounds) -> bool {
        self.records.len() >= bounds.max_records || self.bytes >= bounds.max_bytes
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Bytes of record values it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decision;
    use rdkafka::Timestamp;

    fn msg(topic: &str, partition: i32, offset: i64, value: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn record(value: &[u8]) -> Record {
        Record {
            msg: msg("potato", 0, 0, value),
            decision: Decision::SkipTombstone,
        }
    }

    #[test]
    fn next_offsets_are_one_past_the_highest_per_partition_whatever_the_order() {
        let msgs = [
            msg("potato", 0, 7, b""),
            msg("potato", 1, 3, b""),
            msg("potato", 0, 5, b""),
            msg("tomato", 0, 0, b""),
            msg("potato", 0, 9, b""),
        ];
        assert_eq!(
            next_offsets(&msgs),
            [("potato", 0, 10), ("potato", 1, 4), ("tomato", 0, 1)]
        );
        assert!(next_offsets(&[]).is_empty());
    }

    #[test]
    fn a_batch_is_full_at_its_record_or_byte_bound() {
        let bounds = Bounds {
            max_records: 3,
            max_bytes: 10,
        };
        let mut batch = Batch::default();
        assert!(batch.is_empty() && !batch.is_full(bounds));
        batch.push(record(b"1234"));
        batch.push(record(b"1234"));
        assert!(!batch.is_full(bounds));
        assert_eq!((batch.len(), batch.bytes()), (2, 8));
        batch.push(record(b"12"));
        assert!(batch.is_full(bounds), "3 records");
        let mut big = Batch::default();
        big.push(record(b"12345678901"));
        assert!(
            big.is_full(bounds),
            "one record over the byte bound still makes a batch"
        );
    }
}
