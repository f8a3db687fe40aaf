//! The consumer DB, behind one type: batched, idempotent, order-safe upserts for the job
//! and the read queries for the API.
//!
//! # Writes
//! A batch of [`Write`]s is applied as unordered bulk upserts (`client.bulk_write` on
//! MongoDB ≥ 8.0, the `update` command with many statements before that). Per-statement
//! results are mapped back to the writes, so each gets a [`WriteOutcome`].
//!
//! Unordered bulks give no order between statements, so a batch is split into rounds in
//! which each `(collection, id)` occurs at most once; rounds run one after another, which
//! keeps every image's events in partition order while the bulk stays large.
//!
//! Before that, successive versions of one image collapse ([`collapse`]): a write whose
//! fields a later write of the same image in the batch sets again is dropped
//! ([`WriteOutcome::Collapsed`]) when that cannot change the result, so a burst of full
//! events for one image costs one statement instead of one round each.
//!
//! The stale-event guard is [`ImageChange::guard_filter`] plus a unique index on `id`: an
//! older event matches nothing, its upsert collides with the stored `id`, and the server
//! answers E11000. E11000 can also come from two writers inserting the same new image at
//! once, so a collided statement is tried once more: if it collides again, the stored
//! image is newer and the event is [`WriteOutcome::Stale`].
//!
//! A create (`updated_at: null`) is first sent as a plain insert on the bulk-write path:
//! the image is almost always new, and an insert costs the server a third of a guarded
//! upsert (measured on SecantusDB). If the image exists, the insert collides and the retry
//! sends the guarded upsert, whose answer is the same as it would have been at first.

use std::collections::HashMap;

use std::time::Duration;

use futures::{Stream, TryStreamExt};
use mongodb::{
    Client, Database, Namespace,
    bson::{self, Bson, Document},
    error::{Error, ErrorKind},
    options::{
        CountOptions, EstimatedDocumentCountOptions, FindOneOptions, FindOptions, IndexOptions,
        InsertOneModel, UpdateOneModel, WriteModel,
    },
};
use tokio::sync::OnceCell;

use crate::{
    event::{ImageChange, Version, int_bson},
    mongo::{DUPLICATE_KEY, error_code, is_document_code, is_retriable, is_retriable_code},
};

/// One event to apply to one collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Target collection in the consumer DB.
    pub collection: String,
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
    /// The server refused this statement for good (e.g. a document over 16 MiB).
    Rejected {
        /// Server error code.
        code: i32,
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
        }
    }
}

/// How batches reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WritePath {
    /// `client.bulk_write` when the server speaks MongoDB 8.0 (wire version ≥ 25), else
    /// the `update` command. Decided once, on the first write.
    #[default]
    Auto,
    /// Always `client.bulk_write` (MongoDB ≥ 8.0).
    BulkWrite,
    /// Always the `update` command (any MongoDB ≥ 3.6).
    UpdateCommand,
}

/// Read-side filters shared by the API's list, count and random endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only images with this `is_active`.
    pub is_active: Option<bool>,
    /// `Some(true)`: only images with a `disease`; `Some(false)`: only images without.
    pub has_disease: Option<bool>,
    /// Whether soft-deleted images (`is_deleted: true`) are included.
    pub include_deleted: bool,
}

impl ImageFilter {
    fn to_document(self) -> Document {
        let mut filter = Document::new();
        if let Some(active) = self.is_active {
            filter.insert("is_active", active);
        }
        match self.has_disease {
            Some(true) => {
                filter.insert("disease", bson::doc! { "$ne": Bson::Null });
            }
            Some(false) => {
                filter.insert("disease", Bson::Null);
            }
            None => {}
        }
        if !self.include_deleted {
            filter.insert("is_deleted", bson::doc! { "$ne": true });
        }
        filter
    }
}

/// Errors of the repository. Whether to retry is [`RepoError::is_retriable`]'s call alone.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The driver or the server failed the whole operation.
    #[error("mongodb operation failed: {0}")]
    Mongo(#[from] Error),
    /// A statement failed with a transient server code; the batch must be retried.
    #[error("mongodb write failed transiently (code {code}): {message}")]
    TransientWrite {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// The server's reply lacked a result for a statement (should not happen).
    #[error("mongodb reply is missing the result of statement {0}")]
    MissingResult(usize),
    /// A collection already has a non-unique index on `id` (written by an earlier, index-less
    /// writer such as the batch synchronizer): the stale guard needs a unique one.
    #[error(
        "collection {collection} already has an index on `id` that is not unique; the stale \
         guard needs a unique one. Run `dedupe --apply` (in the consumer-job image, same \
         environment) to remove duplicate ids and that index, then restart consumer-job"
    )]
    IndexConflict {
        /// The collection.
        collection: String,
    },
    /// A collection holds several images with one `id`, so a unique index cannot be built.
    #[error(
        "collection {collection} holds images with the same `id` more than once (written \
         without a unique index), so the unique index the stale guard needs cannot be built. \
         Run `dedupe` (in the consumer-job image, same environment) to list them and \
         `dedupe --apply` to keep the newest of each, then restart consumer-job"
    )]
    DuplicateIds {
        /// The collection.
        collection: String,
    },
    /// The server refused a statement for a reason that is not the document's (roles,
    /// credentials, disk, an unknown code): every other statement would fare the same.
    #[error("mongodb refused the write (code {code}), not for the document's sake: {message}")]
    Refused {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
}

impl RepoError {
    /// Whether the same call may succeed later (network, elections, timeouts, …).
    pub fn is_retriable(&self) -> bool {
        match self {
            RepoError::Mongo(e) => is_retriable(e),
            RepoError::TransientWrite { .. } | RepoError::MissingResult(_) => true,
            RepoError::Refused { .. }
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => false,
        }
    }

    /// Whether the failure is the documents' own (too large, invalid): retrying the same
    /// documents cannot help, but other documents would go through. Only these lead to
    /// dead letters; every other failure is waited out.
    pub fn is_document_level(&self) -> bool {
        match self {
            RepoError::Mongo(e) => match e.kind.as_ref() {
                // The driver refused to send it (e.g. a document over the size limit).
                ErrorKind::InvalidArgument { .. } | ErrorKind::BsonSerialization(_) => true,
                _ => error_code(e).is_some_and(is_document_code),
            },
            RepoError::TransientWrite { .. }
            | RepoError::MissingResult(_)
            | RepoError::Refused { .. }
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => false,
        }
    }

    /// The server's error code, when the failure has one.
    pub fn code(&self) -> Option<i32> {
        match self {
            RepoError::Mongo(e) => error_code(e),
            RepoError::TransientWrite { code, .. } | RepoError::Refused { code, .. } => Some(*code),
            RepoError::MissingResult(_)
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => None,
        }
    }
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

/// Documents a `find` returns per batch: bounds what the driver buffers for one cursor
/// (a LIMS image is ~15 KB) without a round trip per document.
const READ_BATCH: u32 = 16;

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

    /// Applies a batch; the result has one outcome per write, in the same order.
    ///
    /// An `Err` means the batch must be retried as a whole: some statements may have been
    /// applied, which is harmless because every statement is idempotent.
    #[tracing::instrument(skip_all, fields(writes = writes.len()), level = "debug")]
    pub async fn apply(&self, writes: &[Write]) -> Result<Vec<WriteOutcome>, RepoError> {
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        let live = collapse(writes);
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if !live[i] {
                *outcome = Some(WriteOutcome::Collapsed);
            }
        }
        for round in rounds(writes, &live) {
            let first = self.execute(writes, &round, Attempt::First).await?;
            let mut collided = Vec::new();
            for (&i, outcome) in round.iter().zip(first) {
                if outcome == WriteOutcome::Stale {
                    collided.push(i);
                } else {
                    outcomes[i] = Some(outcome);
                }
            }
            if !collided.is_empty() {
                let second = self.execute(writes, &collided, Attempt::Retry).await?;
                for (&i, outcome) in collided.iter().zip(second) {
                    outcomes[i] = Some(outcome);
                }
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.ok_or(RepoError::MissingResult(i)))
            .collect()
    }

    /// One image by id.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn find_by_id(
        &self,
        collection: &str,
        id: i64,
    ) -> Result<Option<Document>, RepoError> {
        let options = FindOneOptions::builder()
            .max_time(self.read_time_limit)
            .build();
        Ok(self
            .db
            .collection::<Document>(collection)
            .find_one(bson::doc! { "id": int_bson(id) })
            .with_options(options)
            .await?)
    }

    /// How many images match `filter`. Without any condition this is the collection's
    /// own document count (metadata, O(1)) instead of a scan of every image: the same
    /// number, except on MongoDB right after an unclean shutdown, until it is validated.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn count(&self, collection: &str, filter: ImageFilter) -> Result<u64, RepoError> {
        let coll = self.db.collection::<Document>(collection);
        let query = filter.to_document();
        if query.is_empty() {
            let options = EstimatedDocumentCountOptions::builder()
                .max_time(self.read_time_limit)
                .build();
            return Ok(coll
                .estimated_document_count()
                .with_options(options)
                .await?);
        }
        let options = CountOptions::builder()
            .max_time(self.read_time_limit)
            .build();
        Ok(coll.count_documents(query).with_options(options).await?)
    }

    /// Up to `limit` images with `id >= from_id`, by ascending id.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn list(
        &self,
        collection: &str,
        from_id: i64,
        limit: u32,
        filter: ImageFilter,
    ) -> Result<Vec<Document>, RepoError> {
        self.list_stream(collection, from_id, limit, filter)
            .await?
            .try_collect()
            .await
    }

    /// [`Self::list`] as a stream: the caller holds one batch of documents at a time and
    /// may stop early (the API ends a page at its byte budget).
    pub async fn list_stream(
        &self,
        collection: &str,
        from_id: i64,
        limit: u32,
        filter: ImageFilter,
    ) -> Result<impl Stream<Item = Result<Document, RepoError>> + Send + use<>, RepoError> {
        let mut query = filter.to_document();
        query.insert("id", bson::doc! { "$gte": int_bson(from_id) });
        let options = FindOptions::builder()
            .sort(bson::doc! { "id": 1 })
            .limit(i64::from(limit))
            .batch_size(READ_BATCH.min(limit))
            .max_time(self.read_time_limit)
            .build();
        let cursor = self
            .db
            .collection::<Document>(collection)
            .find(query)
            .with_options(options)
            .await?;
        Ok(cursor.map_err(RepoError::from))
    }

    /// The `skip`-th image (by ascending id) among those matching `filter`; the API picks
    /// `skip` at random below [`Self::count`], which works on every server (no `$sample`).
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn nth(
        &self,
        collection: &str,
        filter: ImageFilter,
        skip: u64,
    ) -> Result<Option<Document>, RepoError> {
        let options = FindOptions::builder()
            .sort(bson::doc! { "id": 1 })
            .skip(skip)
            .limit(1)
            .max_time(self.read_time_limit)
            .build();
        let mut cursor = self
            .db
            .collection::<Document>(collection)
            .find(filter.to_document())
            .with_options(options)
            .await?;
        Ok(cursor.try_next().await?)
    }

    async fn bulk_write_supported(&self) -> Result<bool, RepoError> {
        match self.path {
            WritePath::BulkWrite => Ok(true),
            WritePath::UpdateCommand => Ok(false),
            WritePath::Auto => self
                .use_bulk_write
                .get_or_try_init(|| async {
                    let hello = self
                        .client
                        .database("admin")
                        .run_command(bson::doc! { "hello": 1 })
                        .await?;
                    let wire = hello
                        .get("maxWireVersion")
                        .and_then(Bson::as_i32)
                        .unwrap_or(0);
                    tracing::info!(wire, bulk_write = wire >= 25, "chose the write path");
                    Ok(wire >= 25)
                })
                .await
                .copied(),
        }
    }

    /// Runs the statements `idxs` of `writes` as one unordered bulk. A duplicate-key
    /// statement comes back as [`WriteOutcome::Stale`]; [`Self::apply`] retries those once.
    async fn execute(
        &self,
        writes: &[Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<WriteOutcome>, RepoError> {
        let result = if self.bulk_write_supported().await? {
            self.execute_bulk_write(writes, idxs, attempt).await
        } else {
            self.execute_update_command(writes, idxs).await
        };
        match result {
            // Some servers report a lone duplicate key as a command error rather than a
            // write error: for one statement that is its answer; for more, ask one by one.
            Err(RepoError::Mongo(e)) if command_code(&e) == Some(DUPLICATE_KEY) => {
                if idxs.len() == 1 {
                    return Ok(vec![WriteOutcome::Stale]);
                }
                let mut outcomes = Vec::with_capacity(idxs.len());
                for &i in idxs {
                    outcomes.extend(Box::pin(self.execute(writes, &[i], attempt)).await?);
                }
                Ok(outcomes)
            }
            other => other,
        }
    }

    async fn execute_bulk_write(
        &self,
        writes: &[Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<WriteOutcome>, RepoError> {
        let models = idxs.iter().map(|&i| -> WriteModel {
            let w = &writes[i];
            let namespace = Namespace::new(self.db.name(), w.collection.as_str());
            if attempt == Attempt::First && w.change.version == Version::Initial {
                return InsertOneModel::builder()
                    .namespace(namespace)
                    .document(w.change.set.clone())
                    .build()
                    .into();
            }
            UpdateOneModel::builder()
                .namespace(namespace)
                .filter(w.change.guard_filter())
                .update(w.change.update())
                .upsert(true)
                .build()
                .into()
        });
        let (results, inserted, errors) = match self
            .client
            .bulk_write(models)
            .ordered(false)
            .verbose_results()
            .await
        {
            Ok(verbose) => (
                verbose.update_results,
                verbose.insert_results,
                HashMap::new(),
            ),
            Err(e) => {
                let interrupted = std::error::Error::source(&e).is_some();
                match e.kind.as_ref() {
                    ErrorKind::BulkWrite(bw)
                        if !interrupted && bw.write_concern_errors.is_empty() =>
                    {
                        let (results, inserted) = match &bw.partial_result {
                            Some(mongodb::error::PartialBulkWriteResult::Verbose(v)) => {
                                (v.update_results.clone(), v.insert_results.clone())
                            }
                            _ => (HashMap::new(), HashMap::new()),
                        };
                        let errors = bw
                            .write_errors
                            .iter()
                            .map(|(k, we)| (*k, (we.code, we.message.clone())))
                            .collect();
                        (results, inserted, errors)
                    }
                    _ => return Err(RepoError::Mongo(e)),
                }
            }
        };
        (0..idxs.len())
            .map(|k| {
                if let Some((code, message)) = errors.get(&k) {
                    return statement_error(*code, message);
                }
                if inserted.contains_key(&k) {
                    return Ok(WriteOutcome::Inserted);
                }
                let r = results.get(&k).ok_or(RepoError::MissingResult(idxs[k]))?;
                Ok(match (r.upserted_id.is_some(), r.modified_count) {
                    (true, _) => WriteOutcome::Inserted,
                    (false, 0) => WriteOutcome::Unchanged,
                    (false, _) => WriteOutcome::Updated,
                })
            })
            .collect()
    }

    /// The pre-8.0 path: one `update` command per collection. The reply lists upserts and
    /// errors per statement but only a total `nModified`, so a mixed batch reports its
    /// matched statements as `Updated` (exact when all or none changed).
    async fn execute_update_command(
        &self,
        writes: &[Write],
        idxs: &[usize],
    ) -> Result<Vec<WriteOutcome>, RepoError> {
        let mut by_collection: Vec<(&str, Vec<usize>)> = Vec::new();
        for (k, &i) in idxs.iter().enumerate() {
            let name = writes[i].collection.as_str();
            match by_collection.iter_mut().find(|(c, _)| *c == name) {
                Some((_, ks)) => ks.push(k),
                None => by_collection.push((name, vec![k])),
            }
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; idxs.len()];
        for (collection, ks) in by_collection {
            let updates: Vec<Document> = ks
                .iter()
                .map(|&k| {
                    let change = &writes[idxs[k]].change;
                    bson::doc! {
                        "q": change.guard_filter(), "u": change.update(),
                        "upsert": true, "multi": false,
                    }
                })
                .collect();
            let reply = self
                .db
                .run_command(update_command(collection, updates, self.db.write_concern()))
                .await?;
            if let Ok(wce) = reply.get_document("writeConcernError") {
                return Err(RepoError::TransientWrite {
                    code: wce.get_i32("code").unwrap_or(64),
                    message: wce.get_str("errmsg").unwrap_or_default().to_owned(),
                });
            }
            let mut local: Vec<Option<WriteOutcome>> = vec![None; ks.len()];
            for upsert in reply.get_array("upserted").into_iter().flatten() {
                if let Some(j) = reply_index(upsert) {
                    local[j] = Some(WriteOutcome::Inserted);
                }
            }
            for error in reply.get_array("writeErrors").into_iter().flatten() {
                if let (Some(j), Bson::Document(d)) = (reply_index(error), error) {
                    let code = d.get_i32("code").unwrap_or(0);
                    let message = d.get_str("errmsg").unwrap_or_default();
                    local[j] = Some(statement_error(code, message)?);
                }
            }
            let matched = local.iter().filter(|o| o.is_none()).count();
            let modified = reply.get("nModified").and_then(bson_as_i64).unwrap_or(0);
            let for_matched = if modified == 0 && matched > 0 {
                WriteOutcome::Unchanged
            } else {
                WriteOutcome::Updated
            };
            for (j, &k) in ks.iter().enumerate() {
                outcomes[k] = Some(local[j].take().unwrap_or_else(|| for_matched.clone()));
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(k, o)| o.ok_or(RepoError::MissingResult(idxs[k])))
            .collect()
    }
}

/// The `update` command for `updates`, carrying `write_concern` itself: `run_command`
/// applies none of the client's, so without it the server would acknowledge writes that
/// are neither journaled nor on a majority, and an offset could be committed for a write
/// that a crash loses.
fn update_command(
    collection: &str,
    updates: Vec<Document>,
    write_concern: Option<&mongodb::options::WriteConcern>,
) -> Document {
    let mut command = bson::doc! { "update": collection, "updates": updates, "ordered": false };
    if let Some(concern) = write_concern.and_then(|wc| bson::to_document(wc).ok()) {
        if !concern.is_empty() {
            command.insert("writeConcern", concern);
        }
    }
    command
}

/// Which writes must be sent (`true`) and which collapse into later ones (`false`).
///
/// Per image, only when its writes in the batch are all versioned (`updated_at` present,
/// null counting as the oldest) and their versions never decrease: then, whatever version
/// is stored, the writes that apply form a suffix of the sequence, so a write whose fields
/// are all set again by later writes is overwritten whenever it applies. Dropping it
/// changes nothing. Partial writes that a later write does not cover are kept (merging
/// them under the newest version would resurrect their fields over a stored version in
/// between), and so is everything of an image with an unversioned or out-of-order write.
pub fn collapse(writes: &[Write]) -> Vec<bool> {
    let mut by_image: HashMap<(&str, i64), Vec<usize>> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        by_image
            .entry((w.collection.as_str(), w.change.id))
            .or_default()
            .push(i);
    }
    let mut live = vec![true; writes.len()];
    for idxs in by_image.values().filter(|idxs| idxs.len() > 1) {
        let versions: Option<Vec<i64>> = idxs
            .iter()
            .map(|&i| match writes[i].change.version {
                Version::Unversioned => None,
                Version::Initial => Some(i64::MIN),
                Version::At(micros) => Some(micros),
            })
            .collect();
        let Some(versions) = versions else { continue };
        if versions.windows(2).any(|w| w[0] > w[1]) {
            continue;
        }
        let mut later: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for &i in idxs.iter().rev() {
            let set = &writes[i].change.set;
            if !later.is_empty() && set.keys().all(|k| later.contains(k.as_str())) {
                live[i] = false;
            }
            later.extend(set.keys().map(String::as_str));
        }
    }
    live
}

/// Which try of a statement this is: a create goes first as a plain insert (bulk-write
/// path only); every retry is the guarded upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    Retry,
}

/// Splits the `live` writes of a batch into rounds in which each `(collection, id)` occurs
/// at most once; the k-th event of an image goes to round k, so rounds in sequence keep
/// each image's order.
fn rounds(writes: &[Write], live: &[bool]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(&str, i64), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, w) in writes.iter().enumerate().filter(|(i, _)| live[*i]) {
        let n = seen
            .entry((w.collection.as_str(), w.change.id))
            .or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    rounds
}

fn statement_error(code: i32, message: &str) -> Result<WriteOutcome, RepoError> {
    let message = message.to_owned();
    if code == DUPLICATE_KEY {
        Ok(WriteOutcome::Stale)
    } else if is_retriable_code(code) {
        Err(RepoError::TransientWrite { code, message })
    } else if is_document_code(code) {
        Ok(WriteOutcome::Rejected { code, message })
    } else {
        Err(RepoError::Refused { code, message })
    }
}

fn command_code(e: &Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn reply_index(entry: &Bson) -> Option<usize> {
    match entry {
        Bson::Document(d) => d
            .get("index")
            .and_then(bson_as_i64)
            .and_then(|i| usize::try_from(i).ok()),
        _ => None,
    }
}

fn bson_as_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        #[allow(clippy::cast_possible_truncation)] // counts are small integers
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(collection: &str, id: i64) -> Write {
        Write {
            collection: collection.to_owned(),
            change: ImageChange::from_json_slice(format!(r#"{{"id":{id}}}"#).as_bytes()).unwrap(),
        }
    }

    #[test]
    fn rounds_hold_each_image_once_and_keep_its_order() {
        let writes = [
            write("a", 1),
            write("a", 2),
            write("a", 1),
            write("b", 1),
            write("a", 1),
            write("a", 2),
        ];
        assert_eq!(
            rounds(&writes, &[true; 6]),
            vec![vec![0, 1, 3], vec![2, 5], vec![4]]
        );
        assert_eq!(
            rounds(&writes, &[true, true, false, true, true, true]),
            vec![vec![0, 1, 3], vec![4, 5]],
            "collapsed writes take no round"
        );
    }

    fn event(json: &str) -> Write {
        Write {
            collection: "a".to_owned(),
            change: ImageChange::from_json_slice(json.as_bytes()).unwrap(),
        }
    }

    #[test]
    fn a_write_collapses_only_into_later_writes_that_cover_it_at_no_older_version() {
        let full = |v: &str| {
            event(&format!(
                r#"{{"id":1,"camera_id":1,"is_active":false,"updated_at":{v}}}"#
            ))
        };
        // A create then two full updates: only the last is sent.
        let writes = [
            full("null"),
            full(r#""2023-10-09T10:00:00""#),
            full(r#""2023-10-09T11:00:00""#),
        ];
        assert_eq!(collapse(&writes), [false, false, true]);
        // Partial updates covered by the union of later ones collapse; others stay.
        let writes = [
            event(r#"{"id":1,"is_active":true,"updated_at":"2023-10-09T10:00:00"}"#),
            event(r#"{"id":1,"disease":"x","updated_at":"2023-10-09T11:00:00"}"#),
            event(r#"{"id":1,"is_active":false,"disease":"y","updated_at":"2023-10-09T12:00:00"}"#),
        ];
        assert_eq!(collapse(&writes), [false, false, true]);
        let writes = [
            full("null"),
            event(r#"{"id":1,"is_active":true,"updated_at":"2023-10-09T10:00:00"}"#),
        ];
        assert_eq!(
            collapse(&writes),
            [true, true],
            "a create is not covered by a partial update"
        );
        // Versions out of order, or an unversioned write: nothing collapses.
        let writes = [
            full(r#""2023-10-09T11:00:00""#),
            full(r#""2023-10-09T10:00:00""#),
        ];
        assert_eq!(collapse(&writes), [true, true]);
        let writes = [
            full("null"),
            event(r#"{"id":1,"camera_id":2,"is_active":true}"#),
        ];
        assert_eq!(collapse(&writes), [true, true]);
        // Other images and other collections are independent.
        let mut other = full("null");
        other.collection = "b".to_owned();
        let writes = [full("null"), other, full(r#""2023-10-09T10:00:00""#)];
        assert_eq!(collapse(&writes), [false, true, true]);
    }

    #[test]
    fn filters_translate_to_mongo_queries() {
        let f = ImageFilter {
            is_active: Some(true),
            has_disease: Some(false),
            include_deleted: false,
        };
        assert_eq!(
            f.to_document(),
            bson::doc! { "is_active": true, "disease": Bson::Null, "is_deleted": { "$ne": true } }
        );
        let all = ImageFilter {
            include_deleted: true,
            ..ImageFilter::default()
        };
        assert_eq!(all.to_document(), Document::new());
    }

    #[test]
    fn the_update_command_carries_the_durable_write_concern() {
        let concern = crate::mongo::durable_write_concern();
        let command = update_command("c", vec![bson::doc! {"q": {}}], Some(&concern));
        assert_eq!(
            command.get_document("writeConcern").unwrap(),
            &bson::doc! { "w": "majority", "j": true }
        );
        assert!(!update_command("c", Vec::new(), None).contains_key("writeConcern"));
    }

    #[test]
    fn duplicate_keys_are_collisions_and_only_transient_codes_are_errors() {
        assert_eq!(statement_error(11000, "dup").unwrap(), WriteOutcome::Stale);
        assert!(
            statement_error(10107, "not primary")
                .unwrap_err()
                .is_retriable()
        );
        assert_eq!(
            statement_error(10334, "too large").unwrap(),
            WriteOutcome::Rejected {
                code: 10334,
                message: "too large".to_owned()
            }
        );
        assert_eq!(
            statement_error(121, "validation").unwrap(),
            WriteOutcome::Rejected {
                code: 121,
                message: "validation".to_owned()
            }
        );
        // Not the document's fault: unauthorized, out of disk, unknown. These hold the
        // stream (retried, never dead-lettered).
        for code in [13, 18, 14031, 0, 999_999] {
            let e = statement_error(code, "cluster").unwrap_err();
            assert!(!e.is_document_level() && !e.is_retriable(), "{code}");
            assert_eq!(e.code(), Some(code));
        }
    }
}
