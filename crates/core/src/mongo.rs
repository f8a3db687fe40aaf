//! Connecting to MongoDB and the one place that decides whether a Mongo error is worth
//! retrying (the job retries those forever with backoff, and dead-letters nothing for them).

use std::time::Duration;

use mongodb::{
    Client,
    error::{Error, ErrorKind, WriteFailure},
    options::{Acknowledgment, ClientOptions, WriteConcern},
};

/// Server error codes that mean "not now", not "never": elections, shutdowns, network,
/// timeouts, write conflicts. Everything else a server answers is taken as permanent.
const RETRIABLE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    24,    // LockTimeout
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    117,   // ConflictingOperationInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    64,    // WriteConcernFailed
    10058, // LegacyNotPrimary
];

/// Server error codes that refuse one document for good, whatever else happens: the
/// document fails validation, is too large, or has a field MongoDB cannot store. Only
/// these are dead-lettered; any other refusal (credentials, roles, a full disk, a code we
/// do not know) concerns the cluster, not the record, and holds the stream until it heals.
const DOCUMENT_CODES: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    14,    // TypeMismatch
    15,    // Overflow
    17,    // (document) CannotApplyUpdate
    28,    // PathNotViable
    52,    // DollarPrefixedFieldName
    55,    // InvalidDBRef
    56,    // NotSingleValueField
    57,    // InvalidIdField
    66,    // ImmutableField
    121,   // DocumentValidationFailure
    10334, // BSONObjectTooLarge
    17280, // KeyTooLong
    17419, // document too large after the update
];

/// Whether a server error code refuses one document for good (see `DOCUMENT_CODES`).
pub fn is_document_code(code: i32) -> bool {
    DOCUMENT_CODES.contains(&code)
}

/// The server's code for a duplicate key: with our guard filter it means "stale event".
pub const DUPLICATE_KEY: i32 = 11000;

/// Whether a server error code is transient.
pub fn is_retriable_code(code: i32) -> bool {
    RETRIABLE_CODES.contains(&code)
}

/// Whether retrying the same operation later may succeed. Network, selection, pool and
/// timeout failures are; so are the transient server codes above and write-concern errors.
pub fn is_retriable(err: &Error) -> bool {
    if err.contains_label("RetryableWriteError")
        || err.contains_label("TransientTransactionError")
        || err.contains_label("ResetPool")
    {
        return true;
    }
    match err.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Internal { .. }
        | ErrorKind::InvalidResponse { .. }
        | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::Command(cmd) => is_retriable_code(cmd.code),
        ErrorKind::Write(WriteFailure::WriteError(we)) => is_retriable_code(we.code),
        ErrorKind::BulkWrite(bw) => !bw.write_concern_errors.is_empty(),
        _ => false,
    }
}

/// The write concern the job's offsets rely on: acknowledged by a majority and in the
/// journal. Without `j`, a server killed right after acknowledging can lose a write whose
/// offset is already committed (a test of ours saw exactly that).
pub fn durable_write_concern() -> WriteConcern {
    WriteConcern::builder()
        .w(Acknowledgment::Majority)
        .journal(true)
        .build()
}

/// Builds a client with short, explicit timeouts so an unreachable server shows up as a
/// retriable error within seconds instead of hanging a batch for the driver's default 30 s,
/// and with [`durable_write_concern`] unless the URI chose one (`w=`, `journal=`).
pub async fn connect(uri: &str, app_name: &str) -> Result<Client, Error> {
    Client::with_options(options(uri, app_name).await?)
}

/// [`connect`] with a pool of its own of at most `max_pool_size` connections: a probe's
/// path to the server that requests queueing for the main pool cannot delay.
pub async fn connect_pool(uri: &str, app_name: &str, max_pool_size: u32) -> Result<Client, Error> {
    let mut options = options(uri, app_name).await?;
    options.max_pool_size = Some(max_pool_size);
    options.min_pool_size = None;
    Client::with_options(options)
}

async fn options(uri: &str, app_name: &str) -> Result<ClientOptions, Error> {
    let mut options = ClientOptions::parse(uri)
        .await
        .map_err(|e| without_credentials(uri, e))?;
    options.app_name = Some(app_name.to_owned());
    options
        .write_concern
        .get_or_insert_with(durable_write_concern);
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(5));
    Ok(options)
}

/// The driver's parse errors quote pieces of the connection string (an address it could
/// not read, an option that is not `key=value`); when a password holds an unescaped `?`,
/// those pieces are the password's. So with credentials in `uri`, such an error becomes
/// one that names the redacted URI instead; without them the driver's reason is kept.
fn without_credentials(uri: &str, err: Error) -> Error {
    let redacted = crate::redact::redact_uri(uri);
    if redacted == uri || !matches!(err.kind.as_ref(), ErrorKind::InvalidArgument { .. }) {
        return err;
    }
    Error::custom(format!(
        "invalid MongoDB connection string {redacted}: the driver's reason is withheld \
         because it can quote the credentials; percent-encode : / ? # [ ] @ and % in the \
         user name and password"
    ))
}

/// The server code an error carries, if any (command, write or first bulk write error).
pub fn error_code(err: &Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(cmd) => Some(cmd.code),
        ErrorKind::Write(WriteFailure::WriteError(we)) => Some(we.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(wce)) => Some(wce.code),
        ErrorKind::BulkWrite(bw) => bw.write_errors.values().next().map(|we| we.code),
        _ => None,
    }
}

/// The code of a command-level failure (`ok: 0`), if that is what `err` is; unlike
/// [`error_code`], not the code of a write error inside an acknowledged reply.
pub fn command_code(err: &Error) -> Option<i32> {
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elections_and_timeouts_are_retriable_but_duplicate_keys_are_not() {
        assert!(is_retriable_code(10107));
        assert!(is_retriable_code(91));
        assert!(!is_retriable_code(DUPLICATE_KEY));
        assert!(!is_retriable_code(2)); // BadValue
    }

    #[tokio::test]
    async fn a_connection_string_the_driver_cannot_read_never_shows_its_password() {
        // An unescaped `?` in the password: the driver splits there and quotes the pieces
        // ("invalid server address admin:hun: … got hun", "ss@host is not key=value").
        for uri in [
            "mongodb://admin:hun?ter2@mongodb-producer:27017",
            "mongodb://admin:4242?ter2@mongodb-producer:27017",
            "mongodb+srv://admin:hun?ter2@cluster0.example.net",
        ] {
            let err = connect(uri, "test").await.expect_err("not a valid URI");
            let message = format!("{err}");
            assert!(
                !message.contains("hun") && !message.contains("4242") && !message.contains("ter2"),
                "{message}"
            );
            assert!(
                message.contains("***@"),
                "names the redacted URI: {message}"
            );
        }
        // Without credentials the driver's own reason is kept.
        let err = connect("mongodb://host:notaport", "test")
            .await
            .expect_err("bad port");
        assert!(format!("{err}").contains("notaport"), "{err}");
    }
}
