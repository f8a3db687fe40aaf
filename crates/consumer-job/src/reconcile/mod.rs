//! Brings a drifted consumer DB back in line with the producer DB: what the stream cannot
//! carry (images from before the switch to leafsync, or beyond Kafka's retention, or
//! changed while the job was down longer than that) and what an older writer stored with
//! the wrong BSON types. The `reconcile` binary is a thin shell around [`reconcile`].
//!
//! Each collection is walked on both sides at once, in `id` order, a page at a time
//! ([`walk::Walk`]: memory bounded by two pages whatever either side holds), reads
//! rate-limited, and each pair is judged by [`leafsync_core::compare::classify`].
//! Repairs go through [`ImageRepository::apply`], the job's own write path and stale
//! guard: a run beside a live job never moves an image back in time, and one the stream
//! updated meanwhile comes back `Stale` and is kept. The one repair that goes back is a
//! consumer version ahead of both the producer's and the clock (a producer with a wrong
//! clock, [`Verdict::Future`]): it is replaced by the producer's version, but only while
//! it is still that same future version. Images only in the consumer DB are reported,
//! and deleted only when asked (after checking once more that the producer lacks them).

use std::time::Duration;

use leafsync_core::{
    CollectionName, ImageChange, ImageRepository, RepoError, Write, WriteOutcome,
    compare::{Verdict, classify, id_of},
    view::image_json,
};
use mongodb::{
    Database,
    bson::{Document, doc},
};
use serde_json::Value;

mod summary;
pub mod walk;

pub use summary::{Summary, Tally, exit_code};
use walk::{Pair, Walk};

/// How a run reads and what it may change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Documents per page, on each side.
    pub page_size: u32,
    /// Producer images read per second at most.
    pub max_per_second: u32,
    /// Change nothing; count what would be done.
    pub dry_run: bool,
    /// Delete images found only in the consumer DB.
    pub delete_orphans: bool,
    /// A consumer version further ahead of the clock than this, and ahead of the
    /// producer's, is [`Verdict::Future`] (the job's `LEAFSYNC_MAX_FUTURE_SKEW`).
    pub max_future_skew: Duration,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The producer DB could not be read.
    #[error("reading the producer DB: {0}")]
    Producer(#[from] mongodb::error::Error),
    /// The consumer DB could not be read or written (not a per-image refusal).
    #[error("the consumer DB: {0}")]
    Consumer(#[from] RepoError),
}

/// The event the Image API would send for a stored producer image: the job's own parser
/// turns it into the change, so types and the version come out as the job makes them.
pub fn change_of(image: &Document) -> Option<ImageChange> {
    match image_json(image) {
        Value::Object(map) => ImageChange::from_json_object(map).ok(),
        _ => None,
    }
}

/// The latest `updated_at` (epoch milliseconds) a consumer copy may have without being
/// [`Verdict::Future`]: now plus the skew.
pub fn horizon(max_future_skew: Duration) -> i64 {
    let now = mongodb::bson::DateTime::now().timestamp_millis();
    now.saturating_add(i64::try_from(max_future_skew.as_millis()).unwrap_or(i64::MAX))
}

/// One repair to make: the producer's image as a write, why, and for a future version
/// the copy it replaces.
struct Repair {
    id: i64,
    write: Write,
    verdict: Verdict,
    replaces: Option<Document>,
}

/// Reconciles one collection; `progress(done)` after every page's worth of images.
pub async fn reconcile(
    producer: &Database,
    consumer: &ImageRepository,
    name: &CollectionName,
    options: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<Tally, ReconcileError> {
    let collection = name.as_str();
    let mut tally = Tally::default();
    let started = tokio::time::Instant::now();
    let page = options.page_size.max(1) as usize;
    let horizon = horizon(options.max_future_skew);
    let mut walk = Walk::new(
        producer.collection(collection),
        consumer.database().collection(collection),
        options.page_size,
        None,
    );
    let mut repairs: Vec<Repair> = Vec::with_capacity(page);
    let mut orphans: Vec<i64> = Vec::with_capacity(page);
    let mut pairs: usize = 0;
    while let Some((id, pair)) = walk.next().await? {
        pairs += 1;
        match pair {
            Pair::ConsumerOnly(_) => orphans.push(id),
            Pair::ProducerOnly(image) => {
                tally.checked += 1;
                judge(id, &image, None, name, horizon, &mut repairs, &mut tally);
            }
            Pair::Both {
                producer: image,
                consumer: copy,
            } => {
                tally.checked += 1;
                judge(
                    id,
                    &image,
                    Some(copy),
                    name,
                    horizon,
                    &mut repairs,
                    &mut tally,
                );
            }
        }
        if repairs.len() >= page {
            apply(consumer, &mut repairs, options.dry_run, &mut tally).await?;
        }
        if orphans.len() >= page {
            settle_orphans(
                producer,
                consumer,
                collection,
                &mut orphans,
                options,
                &mut tally,
            )
            .await?;
        }
        if pairs % page == 0 {
            progress(tally.checked);
            // The rate limit: never ahead of `max_per_second` since the start.
            let due = Duration::from_millis(
                walk.producer_read().saturating_mul(1000)
                    / u64::from(options.max_per_second.max(1)),
            );
            tokio::time::sleep_until(started + due).await;
        }
    }
    apply(consumer, &mut repairs, options.dry_run, &mut tally).await?;
    settle_orphans(
        producer,
        consumer,
        collection,
        &mut orphans,
        options,
        &mut tally,
    )
    .await?;
    let (producer_skipped, consumer_skipped) = walk.skipped();
    if producer_skipped + consumer_skipped > 0 {
        tracing::warn!(
            collection,
            producer_skipped,
            consumer_skipped,
            "documents whose id is not an integer were skipped (see `dedupe` for the consumer's)"
        );
    }
    tally.failed += producer_skipped;
    progress(tally.checked);
    Ok(tally)
}

/// Repairs `images` (id, the producer's image, the consumer's copy if any) the way a run
/// does: the same verdicts, the same version-guarded writes (the continuous verifier's
/// `--repair`). What was repaired is counted as `copied`, `updated`, `retyped`, `future`.
pub async fn repair(
    consumer: &ImageRepository,
    name: &CollectionName,
    images: Vec<(i64, Document, Option<Document>)>,
    max_future_skew: Duration,
) -> Result<Tally, ReconcileError> {
    let horizon = horizon(max_future_skew);
    let mut tally = Tally::default();
    let mut repairs = Vec::with_capacity(images.len());
    for (id, image, copy) in images {
        judge(id, &image, copy, name, horizon, &mut repairs, &mut tally);
    }
    apply(consumer, &mut repairs, false, &mut tally).await?;
    Ok(tally)
}

/// Judges one producer image against the consumer's copy (if any); a repair it needs
/// goes into `repairs`.
fn judge(
    id: i64,
    image: &Document,
    copy: Option<Document>,
    collection: &CollectionName,
    horizon: i64,
    repairs: &mut Vec<Repair>,
    tally: &mut Tally,
) {
    let verdict = classify(image, copy.as_ref(), horizon);
    match verdict {
        Verdict::InSync => tally.in_sync += 1,
        Verdict::ConsumerNewer => tally.kept_newer += 1,
        verdict => {
            let Some(change) = change_of(image) else {
                tally.failed += 1;
                tracing::warn!(%collection, id, "the producer image does not parse as an event; skipped");
                return;
            };
            repairs.push(Repair {
                id,
                write: Write {
                    collection: collection.clone(),
                    change,
                },
                replaces: matches!(verdict, Verdict::Future(_))
                    .then_some(copy)
                    .flatten(),
                verdict,
            });
        }
    }
}

async fn apply(
    consumer: &ImageRepository,
    repairs: &mut Vec<Repair>,
    dry_run: bool,
    tally: &mut Tally,
) -> Result<(), ReconcileError> {
    let count = |tally: &mut Tally, verdict: &Verdict| match verdict {
        Verdict::Missing => tally.copied += 1,
        Verdict::Mistyped(_) => tally.retyped += 1,
        Verdict::Future(_) => tally.future += 1,
        _ => tally.updated += 1,
    };
    let repairs = std::mem::take(repairs);
    if dry_run {
        for r in &repairs {
            tracing::info!(id = r.id, verdict = ?r.verdict, "would repair");
            count(tally, &r.verdict);
        }
        return Ok(());
    }
    let (future, guarded): (Vec<Repair>, Vec<Repair>) =
        repairs.into_iter().partition(|r| r.replaces.is_some());
    let writes: Vec<&Write> = guarded.iter().map(|r| &r.write).collect();
    let mut outcomes = if writes.is_empty() {
        Vec::new()
    } else {
        consumer.apply(&writes).await?
    };
    for r in &future {
        let copy = r.replaces.as_ref().expect("partitioned on it");
        outcomes.push(consumer.replace_future(&r.write, copy).await?);
    }
    for (r, outcome) in guarded.iter().chain(&future).zip(outcomes) {
        let (id, verdict) = (r.id, &r.verdict);
        match outcome {
            WriteOutcome::Inserted | WriteOutcome::Updated => count(tally, verdict),
            WriteOutcome::Stale => tally.kept_newer += 1,
            WriteOutcome::Unchanged | WriteOutcome::Collapsed => {
                tally.unrepaired += 1;
                tracing::warn!(id, ?verdict, "written, yet still different; left as is");
            }
            WriteOutcome::Rejected { code, message } => {
                tally.failed += 1;
                tracing::error!(id, code, message, "MongoDB refused the repair");
            }
            WriteOutcome::Duplicate { index, message } => {
                tally.failed += 1;
                tracing::error!(
                    id,
                    index,
                    message,
                    "another image holds this key of a unique index"
                );
            }
        }
    }
    Ok(())
}

/// Images only the consumer holds: checked once more against the producer (one query
/// for the lot: an image created there after the walk passed is no orphan), reported,
/// and deleted when asked.
async fn settle_orphans(
    producer: &Database,
    consumer: &ImageRepository,
    collection: &str,
    ids: &mut Vec<i64>,
    options: &Options,
    tally: &mut Tally,
) -> Result<(), ReconcileError> {
    if ids.is_empty() {
        return Ok(());
    }
    let candidates = std::mem::take(ids);
    let found: Vec<i64> = {
        use futures::TryStreamExt;
        producer
            .collection::<Document>(collection)
            .find(doc! { "id": { "$in": candidates.clone() } })
            .projection(doc! { "_id": 0, "id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .filter_map(id_of)
            .collect()
    };
    let orphans: Vec<i64> = candidates
        .into_iter()
        .filter(|id| !found.contains(id))
        .collect();
    tally.orphans += orphans.len() as u64;
    if !options.delete_orphans {
        for id in &orphans {
            tracing::info!(collection, id, "only in the consumer DB");
        }
        return Ok(());
    }
    if options.dry_run || orphans.is_empty() {
        tally.deleted += if options.dry_run {
            orphans.len() as u64
        } else {
            0
        };
        return Ok(());
    }
    let deleted = consumer
        .database()
        .collection::<Document>(collection)
        .delete_many(doc! { "id": { "$in": orphans } })
        .await
        .map_err(RepoError::from)?;
    tally.deleted += deleted.deleted_count;
    Ok(())
}
