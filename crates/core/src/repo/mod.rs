//! The consumer DB, behind one type: batched, idempotent, order-safe upserts for the job
//! and the read queries for the API.
//!
//! # Layout
//! - this module: the repository, its write and outcome types, index creation;
//! - [`error`]: [`RepoError`], and what is retriable or the document's own fault;
//! - `read`: [`ImageFilter`] and the API's queries;
//! - `write`: [`ImageRepository::apply`], [`collapse`] and the rounds;
//! - `wire`: the two ways a round reaches the server (`bulkWrite`, the `update` command)
//!   and how their replies become outcomes.
//!
//! # Writes
//! A batch of [`Write`]s is applied as unordered bulk statements, each by the fastest
//! command that keeps its outcome exact (`insert` for creates, `update` for versioned
//! updates, the client-level `bulkWrite` for the rest; see [`WritePath`] and `wire`).
//! Per-statement results are mapped back to the writes, so each gets a [`WriteOutcome`].
//!
//! Unordered bulks give no order between statements, so a batch is split into rounds in
//! which each `(collection, id)` occurs at most once; rounds run one after another, which
//! keeps every image's events in partition order while the bulk stays large.
//!
//! Before that, successive versions of one image collapse ([`collapse`]): a write whose
//! fields a later write of the same image in the batch sets again is dropped
//! ([`WriteOutcome::Collapsed`]) when that cannot change the result, so a burst of full
//! events for one image costs one statement instead of one round each. If a later write
//! it relied on is then refused, the collapsed write is applied after all, or, when a
//! newer version is already stored, refused with it (see `write::uncovered`).
//!
//! The stale-event guard is [`ImageChange::guard_filter`] plus a unique index on `id`: an
//! older event matches nothing, its upsert collides with the stored `id`, and the server
//! answers E11000. E11000 can also come from two writers inserting the same new image at
//! once, and a first try goes under the strict guard (which also misses an equal version),
//! so a collided statement is tried once more under the plain guard: if it collides
//! again, the stored image is newer and the event is [`WriteOutcome::Stale`]. Only a
//! duplicate on the `id` index means that: one on another unique index is
//! [`WriteOutcome::Duplicate`].
//!
//! A create (`updated_at: null`) is first sent as a plain insert: the image is almost
//! always new, and an insert costs the server a third of a guarded upsert (measured on
//! SecantusDB). If the image exists, the insert collides and the retry sends the guarded
//! upsert, whose answer is the same as it would have been at first.
//!
//! A statement refused with a code that is neither transient nor known to be the
//! document's is told apart by behaviour: tried alone a few times while the rest of its
//! round goes through, then [`WriteOutcome::Rejected`] with its real code; when every
//! statement of a round is refused (or a lone one, and even a write of nothing is), the
//! batch fails with [`RepoError::Refused`] and the job holds the stream.

mod bulk;
mod collapse;
mod error;
mod read;
mod reply;
mod wire;
mod write;

use std::time::Duration;

use mongodb::{
    Client, Database,
    bson::{self, Document},
    options::IndexOptions,
};
use tokio::sync::OnceCell;

pub use collapse::collapse;
pub use error::{Hold, RepoError};
pub use read::ImageFilter;

use crate::{
    CollectionName,
    event::ImageChange,
    mongo::{DUPLICATE_KEY, error_code},
};

/// One event to apply to one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Target collection in the consumer DB.
    pub collection: CollectionName,
    /// The parsed event.
    pub change: ImageChange,
}

/// What one [`Write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The image did not exist and was created.
    Inserted,
    /// The image existed and at least one field changed.
    Updated,
    /// The image existed and already held these values (a replay).
    Unchanged,
    /// The stored image is newer than the event; nothing was written.
    Stale,
    /// Not sent: a later write of the same image in the batch sets every field this one
    /// sets, at a version not older, so this one could not change the result.
    Collapsed,
    /// The server refused this statement for good (e.g. a document over 16 MiB, a
    /// validator), or kept refusing it alone while it took the other statements.
    Rejected {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// A unique index other than `id`'s refused it: the document collides with another
    /// image (never counted as stale: the stored image is not a newer version of it).
    Duplicate {
        /// The index's name.
        index: String,
        /// Server message.
        message: String,
    },
}

impl WriteOutcome {
    /// A stable name for logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            WriteOutcome::Inserted => "inserted",
            WriteOutcome::Updated => "updated",
            WriteOutcome::Unchanged => "unchanged",
            WriteOutcome::Stale => "stale",
            WriteOutcome::Collapsed => "collapsed",
            WriteOutcome::Rejected { .. } => "rejected",
            WriteOutcome::Duplicate { .. } => "duplicate",
        }
    }
}

/// How batches reach the server (see `wire` for why each statement goes the way it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePath {
    /// Each statement by the fastest command that keeps its outcome exact: `insert` for
    /// creates, `update` for versioned updates, the client-level `bulkWrite` for the rest
    /// when the server has it (MongoDB ≥ 8.0; asked once, on the first write), else
    /// `update` for those too.
    #[default]
    Auto,
    /// Everything by the client-level `bulkWrite` (MongoDB ≥ 8.0).
    BulkWrite,
    /// Everything by the `insert` and `update` commands (any MongoDB ≥ 3.6): a mixed
    /// `update` command reports all its matched statements `Updated`.
    UpdateCommand,
}

/// The consumer DB's images.
#[derive(Debug, Clone)]
pub struct ImageRepository {
    client: Client,
    db: Database,
    path: WritePath,
    use_bulk_write: std::sync::Arc<OnceCell<bool>>,
    read_time_limit: Option<Duration>,
}

impl ImageRepository {
    /// A repository over database `db_name` of `client`.
    pub fn new(client: Client, db_name: &str, path: WritePath) -> Self {
        let db = client.database(db_name);
        Self {
            client,
            db,
            path,
            use_bulk_write: std::sync::Arc::default(),
            read_time_limit: None,
        }
    }

    /// Reads (find, count) carry `maxTimeMS = limit`: the server stops a scan nobody waits
    /// for any more instead of finishing it after the client gave up.
    #[must_use]
    pub fn with_read_time_limit(mut self, limit: Duration) -> Self {
        self.read_time_limit = Some(limit);
        self
    }

    /// The database this repository reads and writes.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Round-trips a `ping` to the server.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn ping(&self) -> Result<(), RepoError> {
        self.db.run_command(bson::doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Creates the unique index on `id` in each collection (a no-op when it exists).
    /// The stale-event guard depends on it. A non-unique index on `id`, or duplicate ids
    /// already stored, are permanent: the errors say how to repair them (`dedupe`).
    #[tracing::instrument(skip(self), err)]
    pub async fn ensure_indexes(&self, collections: &[&str]) -> Result<(), RepoError> {
        for name in collections {
            let index = mongodb::IndexModel::builder()
                .keys(bson::doc! { "id": 1 })
                .options(IndexOptions::builder().unique(true).build())
                .build();
            let created = self
                .db
                .collection::<Document>(name)
                .create_index(index)
                .await;
            if let Err(e) = created {
                let collection = (*name).to_owned();
                return Err(match error_code(&e) {
                    // IndexOptionsConflict, IndexKeySpecsConflict: `id_1` exists, not unique.
                    Some(85 | 86) => RepoError::IndexConflict { collection },
                    Some(DUPLICATE_KEY) => RepoError::DuplicateIds { collection },
                    _ => RepoError::Mongo(e),
                });
            }
        }
        Ok(())
    }
}
