//! Applying a batch: collapsing versions that cannot change the result, splitting the
//! rest into rounds that keep each image's order, retrying collided statements once,
//! isolating a statement the server keeps refusing, and never losing a collapsed version.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    time::Duration,
};

use mongodb::bson::{self, oid::ObjectId};

use super::{
    ImageRepository, RepoError, Write, WriteOutcome,
    wire::{Attempt, Said},
};
use crate::{ImageId, VERSION_FIELD, event::Version};

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

/// After the rounds: the collapsed writes that a refused write covered. Collapsing is
/// only allowed where it cannot change the result, and a refused later version changes
/// it: the collapsed version would have been stored had it been sent. So every collapsed
/// write whose fields are no longer all set by later writes that took effect is either
/// applied now, through the guard, when no later version of its image has been stored
/// (its order is kept: the guard refuses to go back in time, so this is the only moment
/// it can still be stored), or, when one has, given the refused write's own outcome, so
/// the job dead-letters it beside that write and no version is lost. Returns which
/// writes to apply (`true`), in the shape [`rounds`] takes.
fn uncovered(writes: &[&Write], outcomes: &mut [Option<WriteOutcome>]) -> Vec<bool> {
    let mut orphans = vec![false; writes.len()];
    let mut by_image: HashMap<(&str, ImageId), Vec<usize>> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        by_image
            .entry((w.collection.as_str(), w.change.id))
            .or_default()
            .push(i);
    }
    for idxs in by_image.values() {
        if !idxs
            .iter()
            .any(|&i| outcomes[i] == Some(WriteOutcome::Collapsed))
        {
            continue;
        }
        let mut later: HashSet<&str> = HashSet::new();
        let mut refused: Option<WriteOutcome> = None;
        let mut stored_later = false;
        for &i in idxs.iter().rev() {
            let fields = || writes[i].change.set.keys().map(String::as_str);
            match &outcomes[i] {
                Some(WriteOutcome::Collapsed) if fields().all(|k| later.contains(k)) => {}
                Some(WriteOutcome::Collapsed) if stored_later => {
                    outcomes[i] = refused.clone().map(|r| match r {
                        WriteOutcome::Rejected { code, message } => WriteOutcome::Rejected {
                            code,
                            message: format!("collapsed into a later version of the image that MongoDB refused: {message}"),
                        },
                        other => other,
                    });
                    continue;
                }
                Some(WriteOutcome::Collapsed) => {
                    outcomes[i] = None;
                    orphans[i] = true;
                }
                Some(r @ (WriteOutcome::Rejected { .. } | WriteOutcome::Duplicate { .. })) => {
                    refused.get_or_insert_with(|| r.clone());
                    continue;
                }
                Some(WriteOutcome::Inserted | WriteOutcome::Updated | WriteOutcome::Unchanged) => {
                    stored_later = true;
                }
                Some(WriteOutcome::Stale) | None => {}
            }
            later.extend(fields());
        }
    }
    orphans
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
pub fn collapse<W: Borrow<Write>>(writes: &[W]) -> Vec<bool> {
    let writes: Vec<&Write> = writes.iter().map(Borrow::borrow).collect();
    let mut by_image: HashMap<(&str, ImageId), Vec<usize>> = HashMap::new();
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

/// Splits the `live` writes of a batch into rounds in which each `(collection, id)` occurs
/// at most once; the k-th event of an image goes to round k, so rounds in sequence keep
/// each image's order.
fn rounds(writes: &[&Write], live: &[bool]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(&str, ImageId), usize> = HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CollectionName, ImageChange};

    fn write(collection: &str, id: i64) -> Write {
        Write {
            collection: CollectionName::parse(collection).unwrap(),
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
        let writes: Vec<&Write> = writes.iter().collect();
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
            collection: CollectionName::parse("a").unwrap(),
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
        other.collection = CollectionName::parse("b").unwrap();
        let writes = [full("null"), other, full(r#""2023-10-09T10:00:00""#)];
        assert_eq!(collapse(&writes), [false, true, true]);
    }
}
