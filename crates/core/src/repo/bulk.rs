//! The client-level `bulkWrite` (MongoDB 8.0 and later): the one command whose verbose
//! reply tells `Updated` from `Unchanged` per statement, used for the statements whose
//! outcome must be exact (see [`super::wire`]), and for everything with
//! `LEAFSYNC_MONGO_WRITE_PATH=bulk-write`.

use std::collections::HashMap;

use mongodb::{
    Namespace,
    bson::{self, Bson},
    error::ErrorKind,
    options::{InsertOneModel, UpdateOneModel, WriteModel},
};

use super::{
    ImageRepository, RepoError, Write, WriteOutcome, WritePath,
    reply::{Said, statement_said},
    wire::{Attempt, is_insert},
};

impl ImageRepository {
    /// Whether the server has the client-level `bulkWrite` (MongoDB ≥ 8.0, wire version
    /// ≥ 25); asked once, on the first write.
    pub(super) async fn bulk_write_supported(&self) -> Result<bool, RepoError> {
        if self.path != WritePath::Auto {
            return Ok(self.path == WritePath::BulkWrite);
        }
        self.use_bulk_write
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
                tracing::info!(
                    wire,
                    bulk_write = wire >= 25,
                    "asked the server for bulkWrite"
                );
                Ok(wire >= 25)
            })
            .await
            .copied()
    }

    pub(super) async fn execute_bulk_write(
        &self,
        writes: &[&Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<Said>, RepoError> {
        let models = idxs.iter().map(|&i| -> WriteModel {
            let w = writes[i];
            let namespace = Namespace::new(self.db.name(), w.collection.as_str());
            if is_insert(w, attempt) {
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
                    ErrorKind::BulkWrite(bw) if !interrupted => {
                        let wce = &bw.write_concern_errors[0];
                        return Err(RepoError::write_concern(wce.code, &wce.message));
                    }
                    _ => return Err(RepoError::Mongo(e)),
                }
            }
        };
        (0..idxs.len())
            .map(|k| {
                if let Some((code, message)) = errors.get(&k) {
                    return statement_said(*code, message, None);
                }
                if inserted.contains_key(&k) {
                    return Ok(Said::Done(WriteOutcome::Inserted));
                }
                let r = results.get(&k).ok_or(RepoError::MissingResult(idxs[k]))?;
                Ok(Said::Done(
                    match (r.upserted_id.is_some(), r.modified_count) {
                        (true, _) => WriteOutcome::Inserted,
                        (false, 0) => WriteOutcome::Unchanged,
                        (false, _) => WriteOutcome::Updated,
                    },
                ))
            })
            .collect()
    }
}
