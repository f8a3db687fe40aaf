//! The open dead-letter breaker, kept where every replica sees it: one document per
//! consumer group in the consumer DB's `leafsync_state` collection. A job that starts
//! (a restart, a rollout, an added replica) reads it and holds at once, instead of
//! dead-lettering another window of a systemic failure; the time of the next probe is
//! kept too, so restarts do not bring probes forward. The job closes it (and deletes the
//! document) when a probe record goes through.

use mongodb::{
    Collection, Database,
    bson::{DateTime, Document, doc},
};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use leafsync_core::RepoError;

use super::{Batch, Job};
use crate::retry::retry;

/// The collection of leafsync's own state in the consumer DB.
pub const STATE_COLLECTION: &str = "leafsync_state";

/// An open breaker, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Tripped {
    /// When it opened.
    pub opened_at: DateTime,
    /// When the next record is tried.
    pub next_probe_at: DateTime,
    /// Records tried (and dead-lettered) since it opened.
    pub probes: i64,
    /// Why it opened, for a person.
    pub reason: String,
    /// The first record held when it opened (`topic[partition]@offset`).
    pub at: String,
}

impl Tripped {
    fn to_document(&self, id: &str) -> Document {
        doc! {
            "_id": id, "opened_at": self.opened_at, "next_probe_at": self.next_probe_at,
            "probes": self.probes, "reason": &self.reason, "at": &self.at,
        }
    }

    fn from_document(doc: &Document) -> Option<Self> {
        Some(Self {
            opened_at: *doc.get_datetime("opened_at").ok()?,
            next_probe_at: *doc.get_datetime("next_probe_at").ok()?,
            probes: doc.get_i64("probes").unwrap_or(0),
            reason: doc.get_str("reason").unwrap_or_default().to_owned(),
            at: doc.get_str("at").unwrap_or_default().to_owned(),
        })
    }

    /// Milliseconds until the next probe (0 when due).
    pub fn due_in_ms(&self) -> u64 {
        let now = DateTime::now().timestamp_millis();
        u64::try_from(self.next_probe_at.timestamp_millis() - now).unwrap_or(0)
    }
}

/// Where one consumer group's breaker is kept.
#[derive(Debug, Clone)]
pub struct TrippedStore {
    coll: Collection<Document>,
    id: String,
}

impl TrippedStore {
    /// The breaker of consumer group `group` in `db`.
    pub fn new(db: &Database, group: &str) -> Self {
        Self {
            coll: db.collection(STATE_COLLECTION),
            id: format!("dead-letter-breaker:{group}"),
        }
    }

    /// The open breaker, if one is stored.
    pub async fn load(&self) -> Result<Option<Tripped>, RepoError> {
        let found = self.coll.find_one(doc! { "_id": &self.id }).await?;
        Ok(found.as_ref().and_then(Tripped::from_document))
    }

    /// Stores `tripped` (open).
    pub async fn save(&self, tripped: &Tripped) -> Result<(), RepoError> {
        self.coll
            .replace_one(doc! { "_id": &self.id }, tripped.to_document(&self.id))
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Removes the stored breaker (closed).
    pub async fn clear(&self) -> Result<(), RepoError> {
        self.coll.delete_one(doc! { "_id": &self.id }).await?;
        Ok(())
    }
}

impl Job {
    /// The breaker opens on `batch`: the state to keep, and the one line that says so.
    pub(super) fn trip(&self, batch: &Batch) -> Tripped {
        let settings = self.settings.breaker;
        let dead = batch
            .records
            .iter()
            .filter(|r| r.dead_letter().is_some())
            .count();
        let at = batch.records.first().map_or_else(String::new, |r| {
            format!(
                "{}[{}]@{}",
                r.msg.topic(),
                r.msg.partition(),
                r.msg.offset()
            )
        });
        let reason = format!(
            "{dead} of a batch of {} records would be dead-lettered, past {} of the last {}",
            batch.len(),
            settings.max_share,
            settings.window
        );
        tracing::error!(
            %reason,
            at,
            probe_every_s = settings.probe_interval.as_secs(),
            "dead-letter breaker open: holding the stream (nothing dead-lettered or committed), \
             trying one record per probe interval. Inspect the records, fix their producer, \
             or raise LEAFSYNC_DLQ_BREAKER_MAX_SHARE"
        );
        let now = mongodb::bson::DateTime::now();
        Tripped {
            opened_at: now,
            next_probe_at: mongodb::bson::DateTime::from_millis(
                now.timestamp_millis()
                    + i64::try_from(settings.probe_interval.as_millis()).unwrap_or(i64::MAX),
            ),
            probes: 0,
            reason,
            at,
        }
    }

    /// Runs a write of the breaker's state until it succeeds; `false` when abandoned.
    pub(super) async fn keep<F, Fut>(&self, write: F, abandon: &CancellationToken) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), RepoError>>,
    {
        retry(
            self.settings.backoff,
            abandon,
            write,
            |_: &RepoError| true,
            |e, attempt, delay| self.retrying("breaker-state", e, attempt, delay),
        )
        .await
        .is_ok()
    }
}
