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

use mongodb::{
    bson::{self, Bson, Document, RawArrayBuf, RawDocumentBuf},
    options::WriteConcern,
};

use super::{
    ImageRepository, RepoError, Write, WriteOutcome, WritePath,
    reply::{Said, bson_as_i64, reply_index, statement_said},
};
use crate::{
    CollectionName,
    event::Version,
    mongo::{DUPLICATE_KEY, command_code},
};

/// Which try of a statement this is: a create goes first as a plain insert (a third of a
/// guarded upsert's cost on SecantusDB); every retry is the guarded upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    First,
    Retry,
}

/// Statements of one command carry at most about this many bytes, well under MongoDB's
/// 16 MiB command limit (one larger document still goes, alone).
const COMMAND_BYTES: usize = 8 * 1024 * 1024;

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

    /// Sends each statement of the round by its [`Kind`]: the commands, then the `bulkWrite`.
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

    /// Per collection, an `insert` command for the first try of creates and an `update`
    /// command for the rest, each cut at [`COMMAND_BYTES`], sent one after another. The `update`
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

pub(super) fn is_insert(w: &Write, attempt: Attempt) -> bool {
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
