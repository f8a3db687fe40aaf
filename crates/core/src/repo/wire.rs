//! The two ways a round reaches the server: `client.bulk_write` (MongoDB ≥ 8.0) and the
//! `update` command with many statements (any MongoDB ≥ 3.6), chosen once per repository
//! from the server's wire version, and how each reply becomes one outcome per statement.

use std::collections::HashMap;

use mongodb::{
    Namespace,
    bson::{self, Bson, Document},
    error::{Error, ErrorKind},
    options::{InsertOneModel, UpdateOneModel, WriteModel},
};

use super::{ImageRepository, RepoError, Write, WriteOutcome, WritePath, write::Attempt};
use crate::{
    event::Version,
    mongo::{DUPLICATE_KEY, is_document_code, is_retriable_code},
};

impl ImageRepository {
    pub(super) async fn bulk_write_supported(&self) -> Result<bool, RepoError> {
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

    pub(super) async fn execute_bulk_write(
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
    pub(super) async fn execute_update_command(
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

pub(super) fn command_code(e: &Error) -> Option<i32> {
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
