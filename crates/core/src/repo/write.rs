//! Applying a batch: collapsing versions that cannot change the result, splitting the
//! rest into rounds that keep each image's order, retrying collided statements once,
//! isolating a statement the server keeps refusing, and never losing a collapsed version.

use std::{borrow::Borrow, time::Duration};

use mongodb::bson::{self, oid::ObjectId};

use super::{
    ImageRepository, RepoError, Write, WriteOutcome,
    collapse::{collapse, rounds, uncovered},
    reply::Said,
    wire::Attempt,
};
use crate::{VERSION_FIELD, event::Version};

/// How often a statement the server refuses with an unexplained code is tried alone, and
/// the first pause between tries (doubling).
const SOLO_TRIES: u32 = 3;
const SOLO_PAUSE: Duration = Duration::from_millis(100);

impl ImageRepository {
    /// Applies a batch; the result has one outcome per write, in the same order.
    ///
    /// An `Err` means the batch must be retried as a whole: some statements may have been
    /// applied, which is harmless because every statement is idempotent.
    #[tracing::instrument(skip_all, fields(writes = writes.len()), level = "debug")]
    pub async fn apply<W: Borrow<Write> + Sync>(
        &self,
        writes: &[W],
    ) -> Result<Vec<WriteOutcome>, RepoError> {
        let writes: Vec<&Write> = writes.iter().map(Borrow::borrow).collect();
        let writes = writes.as_slice();
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        let live = collapse(writes);
        for (i, outcome) in outcomes.iter_mut().enumerate() {
            if !live[i] {
                *outcome = Some(WriteOutcome::Collapsed);
            }
        }
        for round in rounds(writes, &live) {
            self.apply_round(writes, &round, &mut outcomes).await?;
        }
        let orphans = uncovered(writes, &mut outcomes);
        for round in rounds(writes, &orphans) {
            self.apply_round(writes, &round, &mut outcomes).await?;
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.ok_or(RepoError::MissingResult(i)))
            .collect()
    }

    /// One round: every statement once, a collided one once more (a create that found
    /// its image, or two writers creating it at once), an unexplained refusal isolated.
    async fn apply_round(
        &self,
        writes: &[&Write],
        round: &[usize],
        outcomes: &mut [Option<WriteOutcome>],
    ) -> Result<(), RepoError> {
        let said = self.execute(writes, round, Attempt::First).await?;
        let mut collided = Vec::new();
        let mut failed = Vec::new();
        for (&i, said) in round.iter().zip(said) {
            match said {
                Said::Collided => collided.push(i),
                Said::Failed { code, message } => failed.push((i, Attempt::First, code, message)),
                said => outcomes[i] = Some(settled(said)),
            }
        }
        if !collided.is_empty() {
            let said = self.execute(writes, &collided, Attempt::Retry).await?;
            for (&i, said) in collided.iter().zip(said) {
                match said {
                    Said::Failed { code, message } => {
                        failed.push((i, Attempt::Retry, code, message));
                    }
                    said => outcomes[i] = Some(settled(said)),
                }
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if failed.len() == round.len() && round.len() > 1 {
            // Every statement refused: the cluster, not the documents.
            let (_, _, code, message) = failed.swap_remove(0);
            return Err(RepoError::Refused { code, message });
        }
        let isolated =
            futures::future::try_join_all(failed.into_iter().map(|(i, attempt, code, message)| {
                self.isolate(writes, i, attempt, code, message)
            }))
            .await?;
        let lone = round.len() == 1;
        for (i, outcome) in isolated {
            match outcome {
                Ok(outcome) => outcomes[i] = Some(outcome),
                Err((code, message)) if lone => {
                    // Nothing else in the round answered: ask the server with a write
                    // that touches no image. If it refuses that too, it is the cluster.
                    self.probe_writes(writes[i].collection.as_str(), code, &message)
                        .await?;
                    outcomes[i] = Some(WriteOutcome::Rejected { code, message });
                }
                Err((code, message)) => {
                    outcomes[i] = Some(WriteOutcome::Rejected { code, message });
                }
            }
        }
        Ok(())
    }

    /// Tries statement `i` alone a few times; its outcome, or the last unexplained refusal.
    async fn isolate(
        &self,
        writes: &[&Write],
        i: usize,
        mut attempt: Attempt,
        mut code: i32,
        mut message: String,
    ) -> Result<(usize, Result<WriteOutcome, (i32, String)>), RepoError> {
        let mut pause = SOLO_PAUSE;
        for _ in 0..SOLO_TRIES {
            tokio::time::sleep(pause).await;
            pause *= 2;
            match self.execute(writes, &[i], attempt).await?.pop() {
                Some(Said::Collided) if attempt == Attempt::First => attempt = Attempt::Retry,
                Some(Said::Failed {
                    code: c,
                    message: m,
                }) => (code, message) = (c, m),
                Some(said) => return Ok((i, Ok(settled(said)))),
                None => return Err(RepoError::MissingResult(i)),
            }
        }
        tracing::warn!(
            collection = %writes[i].collection,
            id = writes[i].change.id.get(),
            code,
            %message,
            "a statement keeps failing alone while others go through: the document's fault"
        );
        Ok((i, Err((code, message))))
    }

    /// Replaces a stored copy whose version is in the future (a producer with a wrong
    /// clock, [`crate::compare::Verdict::Future`]) by `write`, the producer's version,
    /// although that one is older: the one write that goes back in time, so only while
    /// the copy still carries the version it was judged by (a compare-and-set on
    /// `updated_at` and the microsecond version). A copy changed meanwhile comes back
    /// [`WriteOutcome::Stale`], left for the next run.
    pub async fn replace_future(
        &self,
        write: &Write,
        stored: &bson::Document,
    ) -> Result<WriteOutcome, RepoError> {
        let mut filter = bson::doc! {
            "id": crate::event::int_bson(write.change.id.get()),
            "updated_at": stored.get("updated_at").cloned().unwrap_or(bson::Bson::Null),
        };
        match stored.get(VERSION_FIELD) {
            Some(version) => filter.insert(VERSION_FIELD, version.clone()),
            None => filter.insert(VERSION_FIELD, bson::doc! { "$exists": false }),
        };
        let mut update = write.change.update();
        if !matches!(write.change.version, Version::At(_)) {
            update.insert("$unset", bson::doc! { VERSION_FIELD: "" });
        }
        let result = self
            .db
            .collection::<bson::Document>(write.collection.as_str())
            .update_one(filter, update)
            .await?;
        Ok(match (result.matched_count, result.modified_count) {
            (0, _) => WriteOutcome::Stale,
            (_, 0) => WriteOutcome::Unchanged,
            _ => WriteOutcome::Updated,
        })
    }

    /// A write of nothing (an update that matches no document) to `collection`: `Ok` if
    /// the server takes writes there, else the refusal that holds the stream.
    async fn probe_writes(
        &self,
        collection: &str,
        code: i32,
        message: &str,
    ) -> Result<(), RepoError> {
        let mut command = bson::doc! {
            "update": collection,
            "updates": [{ "q": { "_id": ObjectId::new() }, "u": { "$set": { "_leafsync_probe": 1 } }, "upsert": false }],
        };
        if let Some(concern) = self
            .db
            .write_concern()
            .and_then(|wc| bson::to_document(wc).ok())
        {
            command.insert("writeConcern", concern);
        }
        let refused = |c: i32, m: &str| {
            tracing::warn!(
                code = c,
                message = m,
                "MongoDB refuses even a write of nothing"
            );
            Err(RepoError::Refused {
                code,
                message: message.to_owned(),
            })
        };
        match self.db.run_command(command).await {
            Ok(reply) => match reply.get_array("writeErrors").ok().and_then(|e| e.first()) {
                Some(bson::Bson::Document(e)) => {
                    let c = e.get_i32("code").unwrap_or(0);
                    if crate::mongo::is_retriable_code(c) {
                        return Err(RepoError::TransientWrite {
                            code: c,
                            message: e.get_str("errmsg").unwrap_or_default().to_owned(),
                        });
                    }
                    refused(c, e.get_str("errmsg").unwrap_or_default())
                }
                _ => Ok(()),
            },
            Err(e) if crate::mongo::is_retriable(&e) => Err(RepoError::Mongo(e)),
            Err(e) => refused(crate::mongo::error_code(&e).unwrap_or(0), &e.to_string()),
        }
    }
}

/// The outcome a statement's answer gives (a second collision: the stored image is newer).
fn settled(said: Said) -> WriteOutcome {
    match said {
        Said::Done(outcome) => outcome,
        Said::Collided => WriteOutcome::Stale,
        Said::Duplicate { index, message } => WriteOutcome::Duplicate { index, message },
        Said::Rejected { code, message } | Said::Failed { code, message } => {
            WriteOutcome::Rejected { code, message }
        }
    }
}
