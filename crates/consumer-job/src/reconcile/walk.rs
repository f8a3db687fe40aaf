//! Both sides of one collection in `id` order, a page at a time: the producer's images and
//! the consumer's copies, paired by `id`, whatever either side holds that the other
//! lacks. Memory is two pages (one per side) whatever the collections' sizes or how
//! sparse one is against the other; each read is one range predicate on the `id` index.
//! One-shot `reconcile` and the continuous verifier walk with it.

use std::collections::VecDeque;

use futures::TryStreamExt;
use leafsync_core::compare::id_of;
use mongodb::{
    Collection,
    bson::{Bson, Document, doc},
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

/// One side: its collection, the page read ahead, and where the next page starts.
struct Side {
    coll: Collection<Document>,
    page: VecDeque<Document>,
    /// The last `id` read (a number of any BSON type: the next page starts after it).
    after: Option<Bson>,
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
            page: VecDeque::new(),
            after: after.map(Bson::Int64),
            done: false,
            skipped: 0,
            read: 0,
        }
    }

    /// The next integer `id` on this side, reading a page when the last one is used up.
    async fn peek(&mut self, page_size: u32) -> mongodb::error::Result<Option<i64>> {
        loop {
            if let Some(front) = self.page.front() {
                if let Some(id) = id_of(front) {
                    return Ok(Some(id));
                }
                self.skipped += 1;
                self.page.pop_front();
                continue;
            }
            if self.done {
                return Ok(None);
            }
            let filter = self.after.as_ref().map_or_else(
                || doc! { "id": { "$exists": true } },
                |after| doc! { "id": { "$gt": after.clone() } },
            );
            let options = FindOptions::builder()
                .sort(doc! { "id": 1 })
                .limit(i64::from(page_size))
                .batch_size(page_size)
                .build();
            let page: Vec<Document> = self
                .coll
                .find(filter)
                .with_options(options)
                .await?
                .try_collect()
                .await?;
            self.done = page.len() < page_size as usize;
            self.read += page.len() as u64;
            if let Some(last) = page.last() {
                self.after = last.get("id").cloned();
            }
            self.page = page.into();
        }
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
        let front = |side: &mut Side| side.page.pop_front().expect("peeked");
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
