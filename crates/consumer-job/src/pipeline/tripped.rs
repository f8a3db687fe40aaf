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

use leafsync_core::RepoError;

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
