//! Batch assembly, kept apart from I/O: what a batch holds, when it is full, and which
//! offsets committing it stores. The loop in [`super`] feeds it records as they arrive.
//!
//! There is no timer: a batch is whatever has arrived by the time the writer is free. When
//! idle that is one record, written at once; under load records pile up while the previous
//! batch is written, so batches grow with the load, up to the count and byte bounds.

use std::sync::Arc;

use leafsync_core::{Write, WriteOutcome, mongo::DUPLICATE_KEY};
use rdkafka::message::{Message, OwnedMessage};

use crate::{
    config::Route,
    decode::{DeadLetter, DeadLetterReason, Decision},
    dlq::header,
};

/// One consumed record, travelling whole through the write stage: the record as consumed
/// (kept for its dead letter, if it needs one), its route, what
/// [`crate::decode::decide`] made of it, and, once written, its outcome.
#[derive(Debug)]
pub struct Record {
    /// The record as consumed.
    pub msg: OwnedMessage,
    /// Where its topic's events go (`None`: a topic the map lacks).
    pub route: Option<Arc<Route>>,
    /// Its fate.
    pub decision: Decision,
    /// What the write did, once written.
    pub outcome: Option<WriteOutcome>,
}

impl Record {
    /// A record and its decided fate, not written yet.
    pub fn new(msg: OwnedMessage, route: Option<Arc<Route>>, decision: Decision) -> Self {
        Self {
            msg,
            route,
            decision,
            outcome: None,
        }
    }

    /// The write, if the record is to be applied.
    pub fn write(&self) -> Option<&Write> {
        match &self.decision {
            Decision::Apply(w) => Some(w),
            Decision::DeadLetter(_) | Decision::SkipTombstone => None,
        }
    }

    /// The dead letter, if the record is to be (or was) dead-lettered.
    pub fn dead_letter(&self) -> Option<&DeadLetter> {
        match &self.decision {
            Decision::DeadLetter(d) => Some(d),
            Decision::Apply(_) | Decision::SkipTombstone => None,
        }
    }

    /// The metric label of its plant.
    pub fn label(&self) -> &str {
        self.route.as_ref().map_or("unknown", |r| r.label.as_str())
    }

    /// Takes the write's outcome; a write MongoDB refused for the document's sake
    /// becomes a dead letter.
    pub fn settle(&mut self, outcome: WriteOutcome) {
        let letter = match &outcome {
            WriteOutcome::Rejected { code, message } => Some(DeadLetter {
                headers: vec![(header::CODE, code.to_string())],
                ..DeadLetter::new(
                    DeadLetterReason::MongoRejected,
                    format!("MongoDB refused the write (code {code}): {message}"),
                )
            }),
            WriteOutcome::Duplicate { index, message } => Some(DeadLetter {
                headers: vec![
                    (header::CODE, DUPLICATE_KEY.to_string()),
                    (header::INDEX, index.clone()),
                ],
                ..DeadLetter::new(
                    DeadLetterReason::DuplicateKey,
                    format!(
                        "the unique index {index} holds another image with this key (code {DUPLICATE_KEY}): {message}"
                    ),
                )
            }),
            _ => None,
        };
        if let Some(letter) = letter {
            self.decision = Decision::DeadLetter(letter);
        }
        self.outcome = Some(outcome);
    }
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

    /// The first record alone, and the rest: what an open breaker tries, and what waits.
    pub fn split_first(mut self) -> (Batch, Batch) {
        let rest = self.records.split_off(1.min(self.records.len()));
        let mut first = Batch::default();
        let mut others = Batch::default();
        for record in self.records {
            first.push(record);
        }
        for record in rest {
            others.push(record);
        }
        (first, others)
    }

    /// Keeps only the records `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Record) -> bool) {
        self.records.retain(|r| keep(r));
        self.bytes = self
            .records
            .iter()
            .map(|r| r.msg.payload().map_or(0, <[u8]>::len))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        Record::new(msg("potato", 0, 0, value), None, Decision::SkipTombstone)
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
