//! Both sides of one collection in `id` order, a page at a time: the producer's images and
//! the consumer's copies, paired by `id`, whatever either side holds that the other
//! lacks. Memory is two pages (one per side) whatever the collections' sizes or how
//! sparse one is against the other. One-shot `reconcile` and the continuous verifier
//! walk with it.
//!
//! Each side is read by one cursor in `id` order whose batches hold `page_size`
//! documents, the way any client reads a collection fastest: measured on SecantusDB,
//! 50,000 images in 1.0 s, against 1.5 s in bounded range queries of 200 and minutes in
//! open-ended `$gt … limit` pages (SecantusDB reads an open range to its end before it
//! applies a limit). Memory is one batch per side. A walk that stops (a failed read, a
//! restart) starts again after the last `id` it passed. Without an index on `id` the
//! server sorts the whole collection first: the consumer DB has the job's unique index;
//! give the producer DB one too.

use futures::TryStreamExt;
use leafsync_core::compare::id_of;
use mongodb::{
    Collection, Cursor,
    bson::{Document, doc},
    options::FindOptions,
};

/// One `id`, as the two sides hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Pair {
    /// In both DBs.
    Both {
        /// The producer's image.
        producer: Document,
        /// The consumer's copy.
        consumer: Document,
    },
    /// Only in the producer DB.
    ProducerOnly(Document),
    /// Only in the consumer DB.
    ConsumerOnly(Document),
}

/// One side: its collection, its cursor, and the next document.
struct Side {
    coll: Collection<Document>,
    cursor: Option<Cursor<Document>>,
    next: Option<Document>,
    /// Ids up to this one are passed (the cursor starts after it).
    after: Option<i64>,
    done: bool,
    /// Documents read whose `id` is not an integer (skipped).
    skipped: u64,
    /// Documents read.
    read: u64,
}

impl Side {
    fn new(coll: Collection<Document>, after: Option<i64>) -> Self {
        Self {
            coll,
            cursor: None,
            next: None,
            after,
            done: false,
            skipped: 0,
            read: 0,
        }
    }

    /// The next integer `id` on this side.
    async fn peek(&mut self, page_size: u32) -> mongodb::error::Result<Option<i64>> {
        loop {
            if let Some(id) = self.next.as_ref().and_then(id_of) {
                return Ok(Some(id));
            }
            if self.next.take().is_some() {
                self.skipped += 1;
            }
            if self.done {
                return Ok(None);
            }
            if self.cursor.is_none() {
                let filter = self
                    .after
                    .map_or_else(|| doc! {}, |after| doc! { "id": { "$gt": after } });
                // allow_disk_use: a producer DB without an index on `id` is sorted by the
                // server, past its in-memory sort limit on a large collection.
                let options = FindOptions::builder()
                    .sort(doc! { "id": 1 })
                    .batch_size(page_size.max(1))
                    .allow_disk_use(true)
                    .build();
                self.cursor = Some(self.coll.find(filter).with_options(options).await?);
            }
            let cursor = self.cursor.as_mut().expect("opened above");
            match cursor.try_next().await? {
                Some(doc) => {
                    self.read += 1;
                    self.next = Some(doc);
                }
                None => self.done = true,
            }
        }
    }

    fn pop(&mut self) -> Document {
        let doc = self.next.take().expect("peeked");
        if let Some(id) = id_of(&doc) {
            self.after = Some(id);
        }
        doc
    }
}

/// A walk over one collection of both DBs, in `id` order, from after a given `id`.
pub struct Walk {
    producer: Side,
    consumer: Side,
    page_size: u32,
}

impl Walk {
    /// A walk of `producer` against `consumer` over the ids after `after` (all: `None`),
    /// reading `page_size` documents at a time from each.
    pub fn new(
        producer: Collection<Document>,
        consumer: Collection<Document>,
        page_size: u32,
        after: Option<i64>,
    ) -> Self {
        Self {
            producer: Side::new(producer, after),
            consumer: Side::new(consumer, after),
            page_size: page_size.max(1),
        }
    }

    /// The next `id` and what each side holds of it; `None` once both are walked.
    pub async fn next(&mut self) -> mongodb::error::Result<Option<(i64, Pair)>> {
        let p = self.producer.peek(self.page_size).await?;
        let c = self.consumer.peek(self.page_size).await?;
        let front = Side::pop;
        Ok(match (p, c) {
            (None, None) => None,
            (Some(p), Some(c)) if p == c => Some((
                p,
                Pair::Both {
                    producer: front(&mut self.producer),
                    consumer: front(&mut self.consumer),
                },
            )),
            (Some(p), None) => Some((p, Pair::ProducerOnly(front(&mut self.producer)))),
            (Some(p), Some(c)) if p < c => Some((p, Pair::ProducerOnly(front(&mut self.producer)))),
            (_, Some(c)) => Some((c, Pair::ConsumerOnly(front(&mut self.consumer)))),
        })
    }

    /// Producer documents read so far (what a rate limit counts).
    pub fn producer_read(&self) -> u64 {
        self.producer.read
    }

    /// Documents read so far on both sides.
    pub fn read(&self) -> u64 {
        self.producer.read + self.consumer.read
    }

    /// Documents skipped because their `id` is not an integer: (producer, consumer).
    pub fn skipped(&self) -> (u64, u64) {
        (self.producer.skipped, self.consumer.skipped)
    }
}
