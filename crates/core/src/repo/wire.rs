//! How a round reaches the server, and how the reply becomes one [`Said`] per statement.
//!
//! Each statement goes by the fastest command that still tells its exact outcome:
//! - a create, on its first try: the `insert` command (a third of an upsert's cost on
//!   SecantusDB; inserted, or it collides);
//! - a versioned update, on its first try: the `update` command with many statements,
//!   under the *strict* guard ([`crate::ImageChange::strict_guard_filter`]), which matches only
//!   a stored version older than the event's, so a matched statement is known to have
//!   changed the image (the version field itself changes);
//! - everything else (a retry after a collision, a replay at the same version, an
//!   unversioned partial update): the client-level `bulkWrite`, whose verbose reply says
//!   per statement whether it changed anything. The `update` command only counts
//!   modifications per command, so for these it would blur `Updated` and `Unchanged`.
//!   Before MongoDB 8.0 (no `bulkWrite`) they go by the `update` command all the same, and
//!   a command whose matched statements changed some but not all reports them `Updated`.
//!
//! [`WritePath`] can force one way for everything (`bulk-write`, `update-command`). Every
//! command is unordered, carries the durable write concern, and is cut well under the
//! 16 MiB limit; every statement is reported on its own, so one refused document never
//! fails the round.

use std::collections::HashMap;

use mongodb::{
    Namespace,
    bson::{self, Bson, Document, RawArrayBuf, RawDocumentBuf},
    error::ErrorKind,
    options::{InsertOneModel, UpdateOneModel, WriteConcern, WriteModel},
};

use super::{ImageRepository, RepoError, Write, WriteOutcome, WritePath};
use crate::{
    CollectionName,
    event::Version,
    mongo::{DUPLICATE_KEY, command_code, is_document_code, is_retriable_code},
};

/// Which try of a statement this is: a create goes first as a plain insert (a third of a
/// guarded upsert's cost on SecantusDB); every retry is the guarded upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    First,
    Retry,
}

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

/// Statements of one command carry at most about this many bytes, well under MongoDB's
/// 16 MiB command limit (one larger document still goes, alone).
const COMMAND_BYTES: usize = 8 * 1024 * 1024;

/// The unique index the stale guard relies on, as `ensure_indexes` names it.
const ID_INDEX: &str = "id_1";

impl ImageRepository {
    /// Runs the statements `idxs` of `writes` as one unordered round.
    pub(super) async fn execute(
        &self,
        writes: &[&Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<Said>, RepoError> {
        let result = self.execute_by_kind(writes, idxs, attempt).await;
        match result {
            // Some servers report a lone duplicate key as a command error rather than a
            // write error: for one statement that is its answer; for more, ask one by one.
            Err(RepoError::Mongo(e)) if command_code(&e) == Some(DUPLICATE_KEY) => {
                if idxs.len() == 1 {
                    let message = e.to_string();
                    return statement_said(DUPLICATE_KEY, &message, None).map(|s| vec![s]);
                }
                let mut said = Vec::with_capacity(idxs.len());
                for &i in idxs {
                    said.extend(Box::pin(self.execute(writes, &[i], attempt)).await?);
                }
                Ok(said)
            }
            other => other,
        }
    }

    /// Sends each statement of the round by its [`Kind`], the kinds at once.
    async fn execute_by_kind(
        &self,
        writes: &[&Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<Said>, RepoError> {
        let bulk_write = self.bulk_write_supported().await?;
        let mut by_kind: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for (k, &i) in idxs.iter().enumerate() {
            let kind = match (self.path, Kind::of(writes[i], attempt)) {
                (WritePath::BulkWrite, _) => 1,
                (WritePath::Auto, Kind::Exact) if bulk_write => 1,
                _ => 0,
            };
            by_kind[kind].push(k);
        }
        let [by_command, by_bulk_write] = by_kind;
        let subset = |ks: &[usize]| ks.iter().map(|&k| idxs[k]).collect::<Vec<_>>();
        let (commands, bulk) = (subset(&by_command), subset(&by_bulk_write));
        // In a row, as in `execute_commands`.
        let from_commands = if commands.is_empty() {
            Vec::new()
        } else {
            self.execute_commands(writes, &commands, attempt).await?
        };
        let from_bulk = if bulk.is_empty() {
            Vec::new()
        } else {
            self.execute_bulk_write(writes, &bulk, attempt).await?
        };
        let mut said: Vec<Option<Said>> = vec![None; idxs.len()];
        for (ks, answers) in [(by_command, from_commands), (by_bulk_write, from_bulk)] {
            for (k, s) in ks.into_iter().zip(answers) {
                said[k] = Some(s);
            }
        }
        said.into_iter()
            .enumerate()
            .map(|(k, s)| s.ok_or(RepoError::MissingResult(idxs[k])))
            .collect()
    }

    /// Whether the server has the client-level `bulkWrite` (MongoDB ≥ 8.0, wire version
    /// ≥ 25); asked once, on the first write.
    async fn bulk_write_supported(&self) -> Result<bool, RepoError> {
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

    async fn execute_bulk_write(
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

    /// Per collection, an `insert` command for the first try of creates and an `update`
    /// command for the rest, each cut at [`COMMAND_BYTES`], all sent at once. The `update`
    /// reply counts modifications only in total, so the matched statements of a mixed
    /// command are all reported `Updated` (exact when all or none changed).
    async fn execute_commands(
        &self,
        writes: &[&Write],
        idxs: &[usize],
        attempt: Attempt,
    ) -> Result<Vec<Said>, RepoError> {
        let mut commands: Vec<Command<'_>> = Vec::new();
        for (k, &i) in idxs.iter().enumerate() {
            let w = writes[i];
            let insert = is_insert(w, attempt);
            let size = approx_len(&w.change.set);
            let open = commands.iter_mut().rev().find(|c| {
                c.insert == insert
                    && c.collection == &w.collection
                    && (c.bytes + size <= COMMAND_BYTES || c.statements.is_empty())
            });
            match open {
                Some(c) => {
                    c.statements.push(k);
                    c.bytes += size;
                }
                None => commands.push(Command {
                    collection: &w.collection,
                    insert,
                    statements: vec![k],
                    bytes: size,
                }),
            }
        }
        // One command at a time: SecantusDB parses a command body under one lock, and
        // three 5 MB bodies at once took 1.6x as long as the same three in a row (the
        // throughput bench; `scripts/bench.sh throughput`). On MongoDB a command of a few
        // hundred images dwarfs the round trip that ordering adds.
        let concern = self.db.write_concern();
        let mut replies = Vec::with_capacity(commands.len());
        for c in &commands {
            replies.push(self.run_command(c, writes, idxs, attempt, concern).await?);
        }
        let mut said: Vec<Option<Said>> = vec![None; idxs.len()];
        for (command, reply) in commands.iter().zip(replies) {
            for (k, s) in command.statements.iter().zip(reply) {
                said[*k] = Some(s);
            }
        }
        said.into_iter()
            .enumerate()
            .map(|(k, s)| s.ok_or(RepoError::MissingResult(idxs[k])))
            .collect()
    }

    async fn run_command(
        &self,
        command: &Command<'_>,
        writes: &[&Write],
        idxs: &[usize],
        attempt: Attempt,
        concern: Option<&WriteConcern>,
    ) -> Result<Vec<Said>, RepoError> {
        let mut statements = RawArrayBuf::new();
        for &k in &command.statements {
            let change = &writes[idxs[k]].change;
            let filter = || match attempt {
                Attempt::First => change.strict_guard_filter(),
                Attempt::Retry => change.guard_filter(),
            };
            statements.push(if command.insert {
                raw(&change.set)?
            } else {
                raw(&bson::doc! {
                    "q": filter(), "u": change.update(),
                    "upsert": true, "multi": false,
                })?
            });
        }
        let name = command.collection.as_str();
        let reply = self
            .db
            .run_raw_command(command_document(name, command.insert, statements, concern)?)
            .await?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(RepoError::write_concern(
                wce.get_i32("code").unwrap_or(64),
                wce.get_str("errmsg").unwrap_or_default(),
            ));
        }
        let mut said: Vec<Option<Said>> = vec![None; command.statements.len()];
        for upsert in reply.get_array("upserted").into_iter().flatten() {
            if let Some(j) = reply_index(upsert) {
                said[j] = Some(Said::Done(WriteOutcome::Inserted));
            }
        }
        for error in reply.get_array("writeErrors").into_iter().flatten() {
            if let (Some(j), Bson::Document(d)) = (reply_index(error), error) {
                let code = d.get_i32("code").unwrap_or(0);
                let message = d.get_str("errmsg").unwrap_or_default();
                said[j] = Some(statement_said(
                    code,
                    message,
                    d.get_document("keyPattern").ok(),
                )?);
            }
        }
        let unanswered = if command.insert {
            WriteOutcome::Inserted
        } else {
            let matched = said.iter().filter(|s| s.is_none()).count();
            let modified = reply.get("nModified").and_then(bson_as_i64).unwrap_or(0);
            if modified == 0 && matched > 0 {
                WriteOutcome::Unchanged
            } else {
                WriteOutcome::Updated
            }
        };
        Ok(said
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Said::Done(unanswered.clone())))
            .collect())
    }
}

/// How a statement must go to keep its outcome exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A create's first try: `insert`.
    Insert,
    /// A versioned update's first try, under the strict guard: `update`.
    Strict,
    /// Anything else: where `Updated` and `Unchanged` must be told apart per statement.
    Exact,
}

impl Kind {
    fn of(w: &Write, attempt: Attempt) -> Self {
        match (attempt, w.change.version) {
            (Attempt::First, Version::Initial) => Kind::Insert,
            (Attempt::First, Version::At(_)) => Kind::Strict,
            _ => Kind::Exact,
        }
    }
}

/// The statements of one command: one collection, inserts or updates.
struct Command<'a> {
    collection: &'a CollectionName,
    insert: bool,
    /// Positions in the round.
    statements: Vec<usize>,
    bytes: usize,
}

fn is_insert(w: &Write, attempt: Attempt) -> bool {
    Kind::of(w, attempt) == Kind::Insert
}

fn raw(doc: &Document) -> Result<RawDocumentBuf, RepoError> {
    RawDocumentBuf::from_document(doc).map_err(|e| RepoError::Mongo(e.into()))
}

/// The `insert` or `update` command over `statements`, unordered, carrying
/// `write_concern` itself: `run_command` applies none of the client's, so without it the
/// server would acknowledge writes that are neither journaled nor on a majority, and an
/// offset could be committed for a write that a crash loses.
fn command_document(
    collection: &str,
    insert: bool,
    statements: RawArrayBuf,
    write_concern: Option<&WriteConcern>,
) -> Result<RawDocumentBuf, RepoError> {
    let (verb, list) = if insert {
        ("insert", "documents")
    } else {
        ("update", "updates")
    };
    let mut command = RawDocumentBuf::new();
    command.append(verb, collection);
    command.append(list, statements);
    command.append("ordered", false);
    if let Some(concern) = write_concern.and_then(|wc| bson::to_document(wc).ok()) {
        if !concern.is_empty() {
            command.append("writeConcern", raw(&concern)?);
        }
    }
    Ok(command)
}

/// About how many bytes `doc` takes as BSON (exact for binaries and strings, which are
/// nearly all of an image): enough to cut commands well under the server's limit.
fn approx_len(doc: &Document) -> usize {
    fn value_len(value: &Bson) -> usize {
        match value {
            Bson::Binary(b) => b.bytes.len() + 5,
            Bson::String(s) => s.len() + 5,
            Bson::Document(d) => approx_len(d),
            Bson::Array(items) => items.iter().map(|v| value_len(v) + 8).sum::<usize>() + 5,
            _ => 16,
        }
    }
    doc.iter()
        .map(|(k, v)| k.len() + 2 + value_len(v))
        .sum::<usize>()
        + 5
}

/// The [`Said`] for a statement-level error: a duplicate key is attributed to its index
/// (`keyPattern`, else the index the message names); a transient code fails the round.
fn statement_said(
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
    fn commands_carry_the_durable_write_concern() {
        let concern = crate::mongo::durable_write_concern();
        let command = command_document("c", false, RawArrayBuf::new(), Some(&concern)).unwrap();
        let command = command.to_document().unwrap();
        assert_eq!(command.get_str("update").unwrap(), "c");
        assert_eq!(
            command.get_document("writeConcern").unwrap(),
            &bson::doc! { "w": "majority", "j": true }
        );
        let insert = command_document("c", true, RawArrayBuf::new(), None).unwrap();
        let insert = insert.to_document().unwrap();
        assert_eq!(insert.get_str("insert").unwrap(), "c");
        assert!(insert.get_array("documents").is_ok());
        assert!(!insert.contains_key("writeConcern"));
    }

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

    #[test]
    fn the_size_estimate_counts_the_bytes_that_matter() {
        let doc = bson::doc! {
            "id": 1, "data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0; 30_000] },
        };
        let exact = RawDocumentBuf::from_document(&doc)
            .unwrap()
            .as_bytes()
            .len();
        let approx = approx_len(&doc);
        assert!(
            approx >= exact && approx < exact + 64,
            "{approx} vs {exact}"
        );
    }
}
