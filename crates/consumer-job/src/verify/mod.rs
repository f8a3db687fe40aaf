//! Continuous verification (`reconcile --watch`): the producer DB against the consumer
//! DB, image by image, pass after pass, with one-shot `reconcile`'s comparison
//! ([`leafsync_core::compare::classify`]) and walk ([`Walk`](crate::reconcile::walk::Walk)):
//! each plant's collections in `id` order, a page at a time (memory: two pages and the
//! ids waiting for a re-check), reads rate-limited on both sides together.
//!
//! What differs is drift of one [`Kind`]: `missing` (only the producer has it), `extra`
//! (only the consumer has it), `value`, `type` (a field with another BSON type), `future`
//! (a consumer version ahead of the producer's and of the clock). An image that differs
//! but changed within the settle time (its `updated_at` or `created_at`, on either side,
//! not in the future) is *in flight*: the stream is carrying it. It is re-checked at the
//! end of the pass, after the settle time: in sync then, it is nothing; still different
//! and settled, it is drift; still changing, it is counted in flight. A consumer copy
//! newer than the producer's image (`ConsumerNewer`) is the stream getting there first
//! while the walk read the two sides: in flight while recent, and once settled it is
//! `value` drift (a version the producer never had; `--repair` keeps it, as `reconcile`
//! does). A difference found outside the settle time is read once more from both sides
//! before it counts, so two reads of the walk that straddle a write are not drift.
//!
//! Progress is kept per plant in the consumer DB ([`checkpoint`]), saved every page; a
//! restarted verifier resumes its pass. `--repair` sends each drifted image the producer
//! has through `reconcile`'s own version-guarded repair ([`crate::reconcile::repair`]);
//! `extra` images are reported only (as `reconcile` without `--delete-orphans`).

use std::time::Duration;

use leafsync_core::{
    CollectionName, ImageRepository, RepoError,
    compare::{Verdict, classify, updated_millis},
};
use mongodb::{
    Database,
    bson::{Bson, Document},
};
use tokio_util::sync::CancellationToken;

pub mod checkpoint;
pub mod metrics;
mod pass;

pub use checkpoint::{Checkpoint, CheckpointStore};
pub use metrics::VerifyMetrics;

/// A kind of drift (the `kind` label of `leafsync_verify_drift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only in the producer DB.
    Missing,
    /// Only in the consumer DB.
    Extra,
    /// Other values (or an older version, or fields only one side has).
    Value,
    /// A field with another BSON type.
    Type,
    /// A consumer version ahead of the producer's and of the clock.
    Future,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 5] = [
        Kind::Missing,
        Kind::Extra,
        Kind::Value,
        Kind::Type,
        Kind::Future,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Value => "value",
            Kind::Type => "type",
            Kind::Future => "future",
        }
    }
}

/// Drift counts by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drift([u64; 5]);

impl Drift {
    /// Adds `n` images of `kind`.
    pub fn add(&mut self, kind: Kind, n: u64) {
        self.0[kind as usize] += n;
    }

    /// The images of `kind`.
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind as usize]
    }

    /// Every kind together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// How the verifier reads and what it may change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Documents per page, on each side.
    pub page_size: u32,
    /// Documents read per second at most, both sides together (0: unthrottled).
    pub max_docs_per_second: u32,
    /// An image that changed this recently is in flight, not drift.
    pub settle: Duration,
    /// The pause between two passes.
    pub pass_pause: Duration,
    /// Repair drift the producer can repair (through `reconcile`'s write path).
    pub repair: bool,
    /// A consumer version further ahead of the clock than this is `future`.
    pub max_future_skew: Duration,
}

/// One verified collection: the plant's label and the collection's name.
#[derive(Debug, Clone)]
pub struct Plant {
    /// The metric label (the route's label).
    pub label: String,
    /// The collection, the same name in both DBs.
    pub collection: CollectionName,
}

/// Why a pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A read of either DB failed.
    #[error("reading: {0}")]
    Read(#[from] mongodb::error::Error),
    /// The consumer DB (checkpoint, repair) failed.
    #[error("the consumer DB: {0}")]
    Consumer(#[from] RepoError),
    /// A repair failed.
    #[error("repairing: {0}")]
    Repair(#[from] crate::reconcile::ReconcileError),
}

/// What one id's two sides amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judged {
    InSync,
    /// Different, but changed at this time (epoch ms) within the settle time.
    InFlight(i64),
    Drift(Kind),
}

fn date_millis(doc: &Document, key: &str) -> Option<i64> {
    match doc.get(key) {
        Some(Bson::DateTime(at)) => Some(at.timestamp_millis()),
        _ => None,
    }
}

/// Judges one id at `now` (epoch ms): in sync, in flight, or drift of a kind.
fn judge(
    producer: Option<&Document>,
    consumer: Option<&Document>,
    now: i64,
    options: &Options,
) -> Judged {
    let skew = i64::try_from(options.max_future_skew.as_millis()).unwrap_or(i64::MAX);
    let horizon = now.saturating_add(skew);
    let kind = match (producer, consumer) {
        (None, None) => return Judged::InSync,
        (None, Some(_)) => Kind::Extra,
        (Some(p), c) => match classify(p, c, horizon) {
            Verdict::InSync => return Judged::InSync,
            Verdict::Missing => Kind::Missing,
            Verdict::Mistyped(_) => Kind::Type,
            // Ahead of the clock: not a change the stream is carrying.
            Verdict::Future(_) => return Judged::Drift(Kind::Future),
            Verdict::Stale(_) | Verdict::ConsumerNewer => Kind::Value,
        },
    };
    let settle = i64::try_from(options.settle.as_millis()).unwrap_or(i64::MAX);
    let latest = [producer, consumer]
        .into_iter()
        .flatten()
        .flat_map(|d| [updated_millis(d), date_millis(d, "created_at")])
        .flatten()
        .filter(|&at| at <= horizon)
        .max();
    match latest {
        Some(at) if at > now.saturating_sub(settle) => Judged::InFlight(at),
        _ => Judged::Drift(kind),
    }
}

/// Epoch milliseconds now.
fn now_ms() -> i64 {
    mongodb::bson::DateTime::now().timestamp_millis()
}

/// Sleeps `duration`; `false` when `cancel` fired first.
async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

/// Verifies `plants` pass after pass until `cancel` fires; each plant's pass is saved
/// as it goes. A failed pass is logged, `/ready` drops, and the plant is tried again
/// after the pass pause from its checkpoint.
pub async fn watch(
    producer: &Database,
    consumer: &ImageRepository,
    plants: &[Plant],
    options: &Options,
    metrics: &VerifyMetrics,
    cancel: &CancellationToken,
) {
    for plant in plants {
        metrics.plant(&plant.label);
    }
    let verifier = pass::Verifier {
        producer,
        consumer,
        options,
        metrics,
        cancel,
    };
    loop {
        for plant in plants {
            if cancel.is_cancelled() {
                return;
            }
            if let Err(e) = verifier.pass(plant).await {
                metrics.set_ready(false);
                tracing::warn!(
                    plant = plant.label,
                    error = %e,
                    "verification pass interrupted; it resumes from its checkpoint"
                );
            }
        }
        if !pause(options.pass_pause, cancel).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, doc};

    use super::*;

    #[test]
    fn recent_differences_are_in_flight_and_settled_ones_are_drift_of_their_kind() {
        let options = Options {
            page_size: 10,
            max_docs_per_second: 0,
            settle: Duration::from_secs(30),
            pass_pause: Duration::from_secs(1),
            repair: false,
            max_future_skew: Duration::from_secs(300),
        };
        let now = 1_800_000_000_000;
        let at = |ms: i64| Bson::DateTime(DateTime::from_millis(ms));
        let image = |updated: i64, disease: &str| {
            doc! { "id": 1, "created_at": at(now - 3_600_000), "updated_at": at(updated), "disease": disease }
        };
        let old = image(now - 60_000, "Healthy");
        let judge = |p: Option<&Document>, c: Option<&Document>| judge(p, c, now, &options);
        assert_eq!(judge(Some(&old), Some(&old)), Judged::InSync);
        assert_eq!(judge(Some(&old), None), Judged::Drift(Kind::Missing));
        assert_eq!(judge(None, Some(&old)), Judged::Drift(Kind::Extra));
        let other = image(now - 60_000, "Leaf mold");
        assert_eq!(judge(Some(&old), Some(&other)), Judged::Drift(Kind::Value));
        let recent = image(now - 1_000, "Leaf mold");
        assert_eq!(
            judge(Some(&recent), Some(&old)),
            Judged::InFlight(now - 1_000),
            "the producer's update on its way"
        );
        assert_eq!(
            judge(Some(&old), Some(&recent)),
            Judged::InFlight(now - 1_000),
            "the consumer got there first"
        );
        let settled_newer = image(now - 40_000, "Leaf mold");
        assert_eq!(
            judge(Some(&old), Some(&settled_newer)),
            Judged::Drift(Kind::Value)
        );
        let future = image(now + 3_600_000_000, "Leaf mold");
        assert_eq!(
            judge(Some(&old), Some(&future)),
            Judged::Drift(Kind::Future)
        );
        let mut hex = old.clone();
        hex.insert("updated_at", "2027-01-15T08:00:00");
        assert_eq!(judge(Some(&old), Some(&hex)), Judged::Drift(Kind::Type));
    }
}
