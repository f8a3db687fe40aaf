//! Where a verifier is in its pass, per plant: one document per collection in the
//! consumer DB's `leafsync_state` (beside the dead-letter breaker's), `_id`
//! `verifier:<collection>`. Saved after every page, so a restarted verifier (a rollout, a
//! crash, an eviction) resumes its pass after the last verified id instead of starting
//! the collection again, with the drift found so far in that pass. The ids waiting for
//! their end-of-pass re-check (in flight) are not kept: after a restart, or a pass that
//! failed, they are looked at again in the next pass. A resumed pass's duration counts
//! from its first start, downtime included.

use leafsync_core::RepoError;
use mongodb::{
    Collection, Database,
    bson::{Bson, DateTime, Document, doc},
};

use super::{Drift, Kind};
use crate::pipeline::STATE_COLLECTION;

/// One plant's pass, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The pass number, from 1.
    pub pass: i64,
    /// The last id verified in this pass (`None`: the pass has not started).
    pub last_id: Option<i64>,
    /// When the pass started.
    pub pass_started_at: DateTime,
    /// Images checked so far in this pass.
    pub checked: u64,
    /// Drift found so far in this pass, by kind.
    pub drift: Drift,
    /// Images found in flight so far in this pass.
    pub in_flight: u64,
}

impl Checkpoint {
    /// Pass `pass`, not started.
    pub fn fresh(pass: i64) -> Self {
        Self {
            pass,
            last_id: None,
            pass_started_at: DateTime::now(),
            checked: 0,
            drift: Drift::default(),
            in_flight: 0,
        }
    }

    /// Whether no image of this pass was checked yet.
    pub fn is_fresh(&self) -> bool {
        self.last_id.is_none() && self.checked == 0
    }

    fn to_document(&self, id: &str) -> Document {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut drift = Document::new();
        for kind in Kind::ALL {
            drift.insert(kind.as_str(), count(self.drift.get(kind)));
        }
        doc! {
            "_id": id,
            "pass": self.pass,
            "last_id": self.last_id.map_or(Bson::Null, Bson::Int64),
            "pass_started_at": self.pass_started_at,
            "checked": count(self.checked),
            "drift": drift,
            "in_flight": count(self.in_flight),
            "saved_at": DateTime::now(),
        }
    }

    fn from_document(doc: &Document) -> Option<Self> {
        let count = |d: &Document, key: &str| {
            d.get_i64(key)
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0)
        };
        let mut drift = Drift::default();
        if let Ok(stored) = doc.get_document("drift") {
            for kind in Kind::ALL {
                drift.add(kind, count(stored, kind.as_str()));
            }
        }
        Some(Self {
            pass: doc.get_i64("pass").ok()?,
            last_id: doc.get_i64("last_id").ok(),
            pass_started_at: *doc.get_datetime("pass_started_at").ok()?,
            checked: count(doc, "checked"),
            drift,
            in_flight: count(doc, "in_flight"),
        })
    }
}

/// Where one collection's checkpoint is kept.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    coll: Collection<Document>,
    id: String,
}

impl CheckpointStore {
    /// The checkpoint of the verifier of `collection`, in the consumer DB `db`.
    pub fn new(db: &Database, collection: &str) -> Self {
        Self {
            coll: db.collection(STATE_COLLECTION),
            id: format!("verifier:{collection}"),
        }
    }

    /// The stored checkpoint, if any (one that does not read as one: none).
    pub async fn load(&self) -> Result<Option<Checkpoint>, RepoError> {
        let found = self.coll.find_one(doc! { "_id": &self.id }).await?;
        Ok(found.as_ref().and_then(Checkpoint::from_document))
    }

    /// Stores `checkpoint`.
    pub async fn save(&self, checkpoint: &Checkpoint) -> Result<(), RepoError> {
        self.coll
            .replace_one(doc! { "_id": &self.id }, checkpoint.to_document(&self.id))
            .upsert(true)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_it_was_stored() {
        let mut cp = Checkpoint::fresh(7);
        cp.last_id = Some(1234);
        cp.checked = 99;
        cp.in_flight = 3;
        cp.drift.add(Kind::Type, 2);
        cp.drift.add(Kind::Extra, 1);
        let stored = cp.to_document("verifier:x");
        assert_eq!(Checkpoint::from_document(&stored), Some(cp));
        let fresh = Checkpoint::fresh(1);
        assert_eq!(
            Checkpoint::from_document(&fresh.to_document("verifier:x")),
            Some(fresh)
        );
    }
}
