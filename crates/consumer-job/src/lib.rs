//! `consumer-job`: streams LIMS image events from Kafka into the consumer MongoDB.
//!
//! # Layout
//! - [`config`]: `LEAFSYNC_*` environment → [`config::JobConfig`], validated once.
//! - [`decode`]: one record → apply / dead-letter / skip (pure).
//! - [`pipeline`]: [`pipeline::Job`], two stages side by side: fetch and decode, then
//!   bulk upsert, dead-letter, commit; retries, the dead-letter breaker, drain and shutdown.
//! - [`kafka`]: client settings and the rebalance/statistics context.
//! - [`dlq`]: the dead-letter record and its headers.
//! - [`retry`]: jittered exponential backoff that only a cancellation ends.
//! - [`replay`]: sends dead letters back to their source topics (the `dlq-replay` binary).
//! - [`dedupe`]: repairs duplicate ids and a non-unique `id` index (the `dedupe` binary).
//! - [`reconcile`]: repairs a consumer DB that drifted from the producer DB (`reconcile`).
//! - [`verify`]: continuous verification of the consumer DB against the producer DB
//!   (`reconcile --watch`): drift by kind, in-flight images, checkpoints, its metrics.
//! - [`metrics`]: Prometheus metrics and their `/metrics` endpoint.

pub mod config;
pub mod decode;
pub mod dedupe;
pub mod dlq;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod reconcile;
pub mod replay;
pub mod retry;
pub mod verify;

pub use config::JobConfig;
pub use metrics::JobMetrics;
pub use pipeline::{Job, JobError};
