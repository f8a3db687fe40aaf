//! Which writes of a batch must reach the server, and in which rounds: a version that a
//! later one of the same image overwrites whatever is stored collapses into it
//! ([`collapse`]); the rest go in rounds that hold each image once, in its order
//! ([`rounds`]); and a collapsed version whose cover was refused is brought back
//! ([`uncovered`]), so collapsing never loses a version. Pure: no I/O.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
};

use super::{Write, WriteOutcome};
use crate::{ImageId, event::Version};

/// After the rounds: the collapsed writes that a refused write covered. Collapsing is
/// only allowed where it cannot change the result, and a refused later version changes
/// it: the collapsed version would have been stored had it been sent. So every collapsed
/// write whose fields are no longer all set by later writes that took effect is either
/// applied now, through the guard, when no later version of its image has been stored
/// (its order is kept: the guard refuses to go back in time, so this is the only moment
/// it can still be stored), or, when one has, given the refused write's own outcome, so
/// the job dead-letters it beside that write and no version is lost. Returns which
/// writes to apply (`true`), in the shape [`rounds`] takes.
pub(super) fn uncovered(writes: &[&Write], outcomes: &mut [Option<WriteOutcome>]) -> Vec<bool> {
    let mut orphans = vec![false; writes.len()];
    let by_image = by_image(writes);
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
    let by_image = by_image(&writes);
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

/// The positions of each image's writes, `(collection, id)` → positions in batch order.
fn by_image<'a>(writes: &[&'a Write]) -> HashMap<(&'a str, ImageId), Vec<usize>> {
    let mut by_image: HashMap<(&str, ImageId), Vec<usize>> = HashMap::new();
    for (i, w) in writes.iter().enumerate() {
        by_image
            .entry((w.collection.as_str(), w.change.id))
            .or_default()
            .push(i);
    }
    by_image
}

/// Splits the `live` writes of a batch into rounds in which each `(collection, id)` occurs
/// at most once; the k-th event of an image goes to round k, so rounds in sequence keep
/// each image's order.
pub(super) fn rounds(writes: &[&Write], live: &[bool]) -> Vec<Vec<usize>> {
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
