//! How a repository call failed, and the two questions the job asks of every failure:
//! may the same call succeed later, and is it the documents' own fault.

use mongodb::error::{Error, ErrorKind};

use crate::mongo::{error_code, is_document_code, is_retriable};

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
    /// The write concern cannot be satisfied (codes 100, 79): the stream is held until the
    /// deployment or `LEAFSYNC_MONGO_URI` changes; retrying is all that is left.
    #[error("mongodb cannot satisfy the write concern (code {code}): {message}")]
    WriteConcern {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
    /// The server refused every statement of a round (or a lone one, and a write of
    /// nothing too) for a reason that is not a document's: roles, credentials, disk, an
    /// unknown code. Every other statement would fare the same.
    #[error("mongodb refused the write (code {code}), not for the document's sake: {message}")]
    Refused {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
}

/// Write-concern codes that no retry clears by itself: the concern cannot be satisfied by
/// this deployment (UnsatisfiableWriteConcern, UnknownReplWriteConcern).
const UNSATISFIABLE_CONCERN: [i32; 2] = [100, 79];

/// Why the job holds the stream for a [`RepoError`]: the `reason` label of
/// `leafsync_job_stalled`, and what `/ready` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The unique index on `id` cannot be built.
    Index,
    /// MongoDB refuses writes for a reason that is not a document's.
    Refused,
    /// The write concern cannot be satisfied by this deployment.
    WriteConcern,
}

impl Hold {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Index => "index",
            Hold::Refused => "mongo-refused",
            Hold::WriteConcern => "write-concern",
        }
    }
}

impl RepoError {
    /// The error for a write-concern failure with `code`: one that cannot clear by itself
    /// is [`RepoError::WriteConcern`], any other (a timeout) transient.
    pub fn write_concern(code: i32, message: &str) -> Self {
        let message = message.to_owned();
        if UNSATISFIABLE_CONCERN.contains(&code) {
            RepoError::WriteConcern { code, message }
        } else {
            RepoError::TransientWrite { code, message }
        }
    }

    /// Whether waiting it out means holding the stream with the job unready (and for
    /// which reason), rather than a quiet retry of a passing fault.
    pub fn hold(&self) -> Option<Hold> {
        match self {
            RepoError::Refused { .. } => Some(Hold::Refused),
            RepoError::WriteConcern { .. } => Some(Hold::WriteConcern),
            RepoError::IndexConflict { .. } | RepoError::DuplicateIds { .. } => Some(Hold::Index),
            RepoError::Mongo(e) => match error_code(e) {
                Some(code) if UNSATISFIABLE_CONCERN.contains(&code) => Some(Hold::WriteConcern),
                _ if is_retriable(e) || self.is_document_level() => None,
                _ => Some(Hold::Refused),
            },
            RepoError::TransientWrite { .. } | RepoError::MissingResult(_) => None,
        }
    }

    /// Whether the same call may succeed later (network, elections, timeouts, …).
    pub fn is_retriable(&self) -> bool {
        match self {
            RepoError::Mongo(e) => is_retriable(e),
            RepoError::TransientWrite { .. }
            | RepoError::MissingResult(_)
            | RepoError::WriteConcern { .. } => true,
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
            | RepoError::WriteConcern { .. }
            | RepoError::Refused { .. }
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => false,
        }
    }

    /// The server's error code, when the failure has one.
    pub fn code(&self) -> Option<i32> {
        match self {
            RepoError::Mongo(e) => error_code(e),
            RepoError::TransientWrite { code, .. }
            | RepoError::Refused { code, .. }
            | RepoError::WriteConcern { code, .. } => Some(*code),
            RepoError::MissingResult(_)
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => None,
        }
    }
}
