//! Helpers every integration test uses to reach the real local services (SecantusDB and
//! Apache Kafka, started by `scripts/`) under names of its own, so tests never share state.
//! Tests that kill a service get a server of their own ([`MongoProcess`], [`KafkaProcess`]).
//!
//! Addresses come from `LEAFSYNC_TEST_MONGO_URI` and `LEAFSYNC_TEST_KAFKA_BROKERS`, which
//! `scripts/test.sh` exports. When a service does not answer, the helpers panic with a
//! message saying how to start it: an integration test never skips silently.
//!
//! # Layout
//! - this module: names, environment knobs, metric and percentile helpers;
//! - `mongo`: clients of the test server, and [`MongoProcess`] (a server of a test's own);
//! - `kafka`: topics on the test broker, and [`KafkaProcess`] (a broker of a test's own);
//! - `net`: free ports, a latency proxy, a raw HTTP GET;
//! - [`wire`]: a MongoDB wire-protocol proxy that rewrites chosen commands or replies.

mod kafka;
mod mongo;
mod net;
pub mod wire;

use std::time::Duration;

use rand::Rng;

pub use kafka::{KafkaProcess, create_topic, create_topic_with, kafka_config};
pub use mongo::{MongoProcess, mongo_client, mongo_client_at};
pub use net::{free_port, http_get, latency_proxy, parse_response};

/// `(name, value)` pairs as owned strings: an environment for config parsers under test.
pub fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A benchmark knob: `name` parsed from the environment, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p`-quantile (0.0–1.0, nearest rank) of `sorted`; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// A counter or gauge from a Prometheus text exposition, summed over the series whose
/// labels contain every `label="value"` pair given (whole, non-negative counts).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The MongoDB wire server the tests use.
pub fn mongo_uri() -> String {
    std::env::var("LEAFSYNC_TEST_MONGO_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".to_owned())
}

/// The address in [`mongo_uri`] (`mongodb://host:port/…`, one host), e.g. for a
/// [`latency_proxy`] in front of the test server.
pub fn mongo_addr() -> std::net::SocketAddr {
    mongo_uri()
        .trim_start_matches("mongodb://")
        .split(['/', '?'])
        .next()
        .and_then(|host| host.parse().ok())
        .expect("LEAFSYNC_TEST_MONGO_URI is mongodb://IP:PORT")
}

/// The Kafka broker the tests use.
pub fn kafka_brokers() -> String {
    std::env::var("LEAFSYNC_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// `prefix_` followed by 12 random lowercase letters and digits: a database, topic or
/// group name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..12)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect();
    format!("{prefix}_{suffix}")
}
