//! Why a record value cannot become an [`ImageChange`](super::ImageChange): one variant
//! per way an event can be wrong, each naming the field, so the dead letter says what to
//! fix.

/// Why a record value cannot become an [`ImageChange`]. Every variant is permanent:
/// retrying the same bytes gives the same answer, so the job dead-letters them (the
/// job's `DeadLetterReason` names each variant).
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not UTF-8 JSON at all.
    #[error("value is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("value is JSON but not an object")]
    NotAnObject,
    /// No `id` key, or `id: null`.
    #[error("event has no id")]
    MissingId,
    /// `id` is not a non-negative integer.
    #[error("id must be a non-negative integer, got {0}")]
    InvalidId(String),
    /// `data` is not a hex string.
    #[error("field {field:?} is not valid hex: {detail}")]
    InvalidHex {
        /// The field name.
        field: &'static str,
        /// What the hex decoder said.
        detail: String,
    },
    /// A date field is not an ISO-8601 date-time.
    #[error("field {field:?} is not an ISO-8601 date-time: {value:?}")]
    InvalidDate {
        /// The field name.
        field: &'static str,
        /// The offending value (cut to 64 characters).
        value: String,
    },
    /// A known field has the wrong JSON type.
    #[error("field {field:?} must be {expected}, got {got}")]
    WrongType {
        /// The field name.
        field: String,
        /// What LIMS sends there.
        expected: &'static str,
        /// A short description of what came.
        got: String,
    },
    /// A field name MongoDB cannot store as a top-level field (`$…`, contains `.`, empty).
    #[error("field name {0:?} cannot be stored")]
    InvalidFieldName(String),
}
