//! The API's configuration: one typed struct from `LEAFSYNC_*` variables, validated once.

use std::{net::SocketAddr, time::Duration};

use leafsync_core::{CONSUMER_DB, CONSUMER_MONGO_URI, runtime::LogFormat};
use serde::{Deserialize, Serialize};

/// Configuration of `consumer-api`. Every field is `LEAFSYNC_<FIELD>` in upper case.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiConfig {
    /// MongoDB connection string (may hold credentials: never logged).
    pub mongo_uri: String,
    /// Consumer database.
    pub mongo_db: String,
    /// Address the HTTP API (and its `/metrics`) listens on.
    pub api_addr: SocketAddr,
    /// A request that takes longer is answered 503.
    pub request_timeout_ms: u64,
    /// Requests in progress at once; more are answered 503 at once instead of queueing.
    pub max_concurrent_requests: usize,
    /// Largest `limit` the list endpoint accepts.
    pub list_max_limit: u32,
    /// `limit` when the request gives none.
    pub list_default_limit: u32,
    /// How long `/ready` waits for MongoDB's `ping`.
    pub ready_timeout_ms: u64,
    /// A list page ends early (fewer than `limit` images) rather than grow past this.
    pub page_max_bytes: usize,
    /// Response bytes held at once by all requests (being built or sent); more wait.
    pub max_response_bytes: usize,
    /// TCP connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A connection whose client reads nothing of its response for this long is closed.
    pub write_timeout_ms: u64,
    /// Longest a client may take to send a request's head, counted from when the server
    /// waits for it: so also how long an idle keep-alive connection stays open.
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing was read or written for this long is closed.
    pub idle_timeout_ms: u64,
    /// Address of the probe listener: `/live`, `/ready`, `/metrics` again, outside the
    /// API's connection cap (the manifests' probes and scrapes use it).
    pub probe_addr: SocketAddr,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            mongo_uri: CONSUMER_MONGO_URI.to_owned(),
            mongo_db: CONSUMER_DB.to_owned(),
            api_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            request_timeout_ms: 5_000,
            max_concurrent_requests: 256,
            list_max_limit: 100,
            list_default_limit: 20,
            ready_timeout_ms: 1_000,
            page_max_bytes: 4 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            max_connections: 512,
            write_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            probe_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            log_format: LogFormat::Text,
        }
    }
}

pub use leafsync_core::env::{ConfigError, EnvConfig};

impl EnvConfig for ApiConfig {
    /// The API's settings are its configuration, checked: every field is used as it is.
    type Settings = ApiConfig;

    /// Checks what serde cannot.
    fn validate(self) -> Result<ApiConfig, ConfigError> {
        leafsync_core::env::check_mongo_uri(&self.mongo_uri)?;
        let checks: [(bool, &'static str, &'static str); 10] = [
            (
                !self.mongo_db.trim().is_empty(),
                "LEAFSYNC_MONGO_DB",
                "must not be empty",
            ),
            (
                self.request_timeout_ms > 0,
                "LEAFSYNC_REQUEST_TIMEOUT_MS",
                "must be at least 1",
            ),
            (
                self.max_concurrent_requests > 0,
                "LEAFSYNC_MAX_CONCURRENT_REQUESTS",
                "must be at least 1",
            ),
            (
                self.list_max_limit > 0,
                "LEAFSYNC_LIST_MAX_LIMIT",
                "must be at least 1",
            ),
            (
                self.list_default_limit > 0 && self.list_default_limit <= self.list_max_limit,
                "LEAFSYNC_LIST_DEFAULT_LIMIT",
                "must be between 1 and LEAFSYNC_LIST_MAX_LIMIT",
            ),
            (
                self.page_max_bytes >= 64 * 1024,
                "LEAFSYNC_PAGE_MAX_BYTES",
                "must be at least 65536 (a few images)",
            ),
            (
                self.max_response_bytes >= self.page_max_bytes,
                "LEAFSYNC_MAX_RESPONSE_BYTES",
                "must be at least LEAFSYNC_PAGE_MAX_BYTES",
            ),
            (
                self.max_connections > 0 && self.write_timeout_ms > 0,
                "LEAFSYNC_MAX_CONNECTIONS / LEAFSYNC_WRITE_TIMEOUT_MS",
                "must be at least 1",
            ),
            (
                self.header_read_timeout_ms > 0 && self.idle_timeout_ms > 0,
                "LEAFSYNC_HEADER_READ_TIMEOUT_MS / LEAFSYNC_IDLE_TIMEOUT_MS",
                "must be at least 1",
            ),
            (
                self.probe_addr != self.api_addr,
                "LEAFSYNC_PROBE_ADDR",
                "must differ from LEAFSYNC_API_ADDR",
            ),
        ];
        match checks.into_iter().find(|(ok, _, _)| !ok) {
            Some((_, var, problem)) => Err(ConfigError::invalid(var, problem)),
            None => Ok(self),
        }
    }
}

impl ApiConfig {
    /// `request_timeout_ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `header_read_timeout_ms` as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use leafsync_test_support::vars;

    #[test]
    fn defaults_point_at_the_lims_consumer_db() {
        let c = ApiConfig::from_vars(vars(&[])).unwrap();
        assert!(
            c.mongo_uri
                .contains("mongodb-consumer.leaf-image-management-system")
        );
        assert_eq!(c.mongo_db, "imagedbplantconsumer");
        assert_eq!(c.api_addr.port(), 8080);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("LEAFSYNC_API_ADDR", "8080"),
            ("LEAFSYNC_LIST_MAX_LIMIT", "0"),
            ("LEAFSYNC_LIST_DEFAULT_LIMIT", "1000"),
            ("LEAFSYNC_REQUEST_TIMEOUT_MS", "soon"),
            ("LEAFSYNC_MONGO_URI", "postgres://x"),
            ("LEAFSYNC_LOG_FORMAT", "xml"),
            ("LEAFSYNC_PAGE_MAX_BYTES", "1000"),
            ("LEAFSYNC_MAX_RESPONSE_BYTES", "70000"),
        ] {
            let err = ApiConfig::from_vars(vars(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value:?} gave {err:?}");
        }
    }
}
