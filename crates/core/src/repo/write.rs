//! Applying a batch: collapsing versions that cannot change the result, splitting the
//! rest into rounds that keep each image's order, and retrying collided statements once.

use std::collections::HashMap;

use super::{ImageRepository, RepoError, Write, WriteOutcome, wire::command_code};
use crate::{event::Version, mongo::DUPLICATE_KEY};

impl ImageRepository {
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
pub(super) enum Attempt {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageChange;

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
}
