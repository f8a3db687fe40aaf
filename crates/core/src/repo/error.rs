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
    /// The server refused a statement for a reason that is not the document's (roles,
    /// credentials, disk, an unknown code): every other statement would fare the same.
    #[error("mongodb refused the write (code {code}), not for the document's sake: {message}")]
    Refused {
        /// Server error code.
        code: i32,
        /// Server message.
        message: String,
    },
}

impl RepoError {
    /// Whether the same call may succeed later (network, elections, timeouts, …).
    pub fn is_retriable(&self) -> bool {
        match self {
            RepoError::Mongo(e) => is_retriable(e),
            RepoError::TransientWrite { .. } | RepoError::MissingResult(_) => true,
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
            | RepoError::Refused { .. }
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => false,
        }
    }

    /// The server's error code, when the failure has one.
    pub fn code(&self) -> Option<i32> {
        match self {
            RepoError::Mongo(e) => error_code(e),
            RepoError::TransientWrite { code, .. } | RepoError::Refused { code, .. } => Some(*code),
            RepoError::MissingResult(_)
            | RepoError::IndexConflict { .. }
            | RepoError::DuplicateIds { .. } => None,
        }
    }
}
