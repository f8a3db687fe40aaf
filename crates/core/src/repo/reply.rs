//! What a write reply says of each statement: a [`Said`] per statement, from the
//! server's per-statement errors (`writeErrors`) and counts, before
//! [`ImageRepository::apply`](super::ImageRepository::apply) decides the outcome. A
//! duplicate key is attributed to its index; a code is transient (the round fails and is
//! retried), the document's (dead-lettered), or neither (found out by behaviour).

use mongodb::bson::{Bson, Document};

use super::{RepoError, WriteOutcome};
use crate::mongo::{DUPLICATE_KEY, is_document_code, is_retriable_code};

/// The unique index the stale guard relies on, as `ensure_indexes` names it.
const ID_INDEX: &str = "id_1";

/// What the server said of one statement, before [`ImageRepository::apply`] decides its
/// outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Said {
    /// Applied: inserted, updated or unchanged.
    Done(WriteOutcome),
    /// A duplicate key on the unique `id` index (or on an index the reply does not name):
    /// the stored image is newer than the event, or another writer created it meanwhile.
    Collided,
    /// A duplicate key on another unique index: the document collides with another image.
    Duplicate {
        /// The index's name.
        index: String,
        /// The server's message.
        message: String,
    },
    /// Refused for the document's own sake (validation, size, …).
    Rejected {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// A code that is neither transient nor known to be the document's: the statement
    /// alone, or every statement? `apply` finds out by behaviour.
    Failed {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
}

/// The [`Said`] for a statement-level error: a duplicate key is attributed to its index
/// (`keyPattern`, else the index the message names); a transient code fails the round.
pub(super) fn statement_said(
    code: i32,
    message: &str,
    key_pattern: Option<&Document>,
) -> Result<Said, RepoError> {
    let message = message.to_owned();
    if code == DUPLICATE_KEY {
        let on_id = match key_pattern {
            Some(keys) => keys.keys().map(String::as_str).eq(["id"]),
            None => index_named(&message).is_none_or(|(index, first_key)| {
                index == ID_INDEX || (first_key == Some("id") && !index.contains(','))
            }),
        };
        if on_id {
            return Ok(Said::Collided);
        }
        let index = index_named(&message).map_or_else(
            || {
                key_pattern
                    .into_iter()
                    .flat_map(Document::iter)
                    .map(|(k, v)| format!("{k}_{v}"))
                    .collect::<Vec<_>>()
                    .join("_")
            },
            |(name, _)| name.to_owned(),
        );
        return Ok(Said::Duplicate { index, message });
    }
    if is_retriable_code(code) {
        Err(RepoError::TransientWrite { code, message })
    } else if is_document_code(code) {
        Ok(Said::Rejected { code, message })
    } else {
        Ok(Said::Failed { code, message })
    }
}

/// The index an E11000 message names, and the first field of its key, from MongoDB's
/// `… index: NAME dup key: { FIELD: … }`.
fn index_named(message: &str) -> Option<(&str, Option<&str>)> {
    let (_, after) = message.split_once("index: ")?;
    let name = after.split_whitespace().next()?;
    let first_key = after
        .split_once("dup key: {")
        .and_then(|(_, keys)| keys.trim_start().split(':').next())
        .map(str::trim);
    Some((name, first_key))
}

pub(super) fn reply_index(entry: &Bson) -> Option<usize> {
    match entry {
        Bson::Document(d) => d
            .get("index")
            .and_then(bson_as_i64)
            .and_then(|i| usize::try_from(i).ok()),
        _ => None,
    }
}

pub(super) fn bson_as_i64(value: &Bson) -> Option<i64> {
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
    use mongodb::bson;

    #[test]
    fn duplicate_keys_are_told_apart_by_their_index() {
        let on = |keys: Document| statement_said(11000, "dup", Some(&keys)).unwrap();
        assert_eq!(on(bson::doc! { "id": 1 }), Said::Collided);
        assert_eq!(
            on(bson::doc! { "serial": 1 }),
            Said::Duplicate {
                index: "serial_1".to_owned(),
                message: "dup".to_owned()
            }
        );
        let said = |message: &str| statement_said(11000, message, None).unwrap();
        let on_serial = "E11000 duplicate key error collection: db.c index: serial_1 dup key: \
                         { serial: \"a\" }";
        assert!(matches!(said(on_serial), Said::Duplicate { index, .. } if index == "serial_1"));
        assert_eq!(
            said("E11000 duplicate key error collection: db.c index: id_1 dup key: { id: 5 }"),
            Said::Collided
        );
        assert_eq!(
            said("E11000 duplicate key error collection: db.c index: by_id dup key: { id: 5 }"),
            Said::Collided,
            "a unique index on id under another name"
        );
        assert_eq!(
            said("E11000 duplicate key error"),
            Said::Collided,
            "unattributed"
        );
    }

    #[test]
    fn transient_codes_fail_the_round_and_others_stay_with_their_statement() {
        assert!(
            statement_said(10107, "not primary", None)
                .unwrap_err()
                .is_retriable()
        );
        for code in [10334, 121, 2] {
            assert!(matches!(
                statement_said(code, "doc", None).unwrap(),
                Said::Rejected { .. }
            ));
        }
        // Not the document's fault as far as the code tells: unauthorized, out of disk,
        // unknown. `apply` tells a lone bad statement from a refusing cluster.
        for code in [13, 18, 14031, 0, 999_999] {
            assert_eq!(
                statement_said(code, "?", None).unwrap(),
                Said::Failed {
                    code,
                    message: "?".to_owned()
                }
            );
        }
    }
}
