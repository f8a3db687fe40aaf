//! Brings a drifted consumer DB back in line with the producer DB: what the stream cannot
//! carry (images from before the switch to leafsync, or beyond Kafka's retention, or
//! changed while the job was down longer than that) and what an older writer stored with
//! the wrong BSON types. The `reconcile` binary is a thin shell around [`reconcile`].
//!
//! Each producer collection is read in pages by `id` (memory bounded by the page, the
//! reads rate-limited), the consumer's images of the same id range are read beside it,
//! and each pair is judged by [`leafsync_core::compare::classify`]. Repairs go through
//! [`ImageRepository::apply`], the job's own write path and stale guard: a run beside a
//! live job never moves an image back in time, and one the stream updated meanwhile
//! comes back `Stale` and is kept. Images only in the consumer DB are reported, and
//! deleted only when asked (after checking once more that the producer lacks them).

use std::{collections::BTreeMap, time::Duration};

use futures::TryStreamExt;
use leafsync_core::{
    ImageChange, ImageRepository, RepoError, Write, WriteOutcome,
    compare::{Verdict, classify, id_of},
    view::image_json,
};
use mongodb::{
    Database,
    bson::{Document, doc},
    options::FindOptions,
};
use serde_json::Value;

mod summary;

pub use summary::{Summary, Tally, exit_code};

/// How a run reads and what it may change.
#[derive(Debug, Clone)]
pub struct Options {
    /// Producer images per page (and consumer images per orphan page).
    pub page_size: u32,
    /// Producer images read per second at most.
    pub max_per_second: u32,
    /// Change nothing; count what would be done.
    pub dry_run: bool,
    /// Delete images found only in the consumer DB.
    pub delete_orphans: bool,
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
fn change_of(image: &Document) -> Option<ImageChange> {
    match image_json(image) {
        Value::Object(map) => ImageChange::from_json_object(map).ok(),
        _ => None,
    }
}

/// The filter for `id` in `(after, upto]` (either end open): one predicate on one field.
fn id_range(after: Option<i64>, upto: Option<i64>) -> Document {
    let mut range = Document::new();
    if let Some(after) = after {
        range.insert("$gt", after);
    }
    if let Some(upto) = upto {
        range.insert("$lte", upto);
    }
    if range.is_empty() {
        doc! {}
    } else {
        doc! { "id": range }
    }
}

async fn page(
    db: &Database,
    collection: &str,
    filter: Document,
    limit: Option<u32>,
) -> mongodb::error::Result<Vec<Document>> {
    let options = FindOptions::builder()
        .sort(doc! { "id": 1 })
        .limit(limit.map(i64::from))
        .build();
    db.collection::<Document>(collection)
        .find(filter)
        .with_options(options)
        .await?
        .try_collect()
        .await
}

/// Judges a producer page against the consumer's copies (taking them out of `copies`, so
/// what is left are orphans); returns the repairs to write and what each repairs.
fn judge(
    images: &[Document],
    copies: &mut BTreeMap<i64, Document>,
    collection: &str,
    tally: &mut Tally,
) -> (Vec<Write>, Vec<(i64, Verdict)>) {
    let mut writes = Vec::new();
    let mut verdicts = Vec::new();
    for image in images {
        tally.checked += 1;
        let Some(id) = id_of(image) else {
            tally.failed += 1;
            tracing::warn!(collection, "a producer image has no integer id; skipped");
            continue;
        };
        match classify(image, copies.remove(&id).as_ref()) {
            Verdict::InSync => tally.in_sync += 1,
            Verdict::ConsumerNewer => tally.kept_newer += 1,
            verdict => {
                if let Some(change) = change_of(image) {
                    writes.push(Write {
                        collection: collection.to_owned(),
                        change,
                    });
                    verdicts.push((id, verdict));
                } else {
                    tally.failed += 1;
                    tracing::warn!(
                        collection,
                        id,
                        "the producer image does not parse as an event; skipped"
                    );
                }
            }
        }
    }
    (writes, verdicts)
}

/// Reconciles one collection; `progress(done)` after every page.
pub async fn reconcile(
    producer: &Database,
    consumer: &ImageRepository,
    collection: &str,
    options: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<Tally, ReconcileError> {
    let mut tally = Tally::default();
    let started = tokio::time::Instant::now();
    let mut after: Option<i64> = None;
    loop {
        let images = page(
            producer,
            collection,
            id_range(after, None),
            Some(options.page_size),
        )
        .await?;
        let full = images.len() == options.page_size as usize;
        let upto = images.iter().rev().find_map(id_of);
        // The consumer's images of the same range; past the producer's last id, pages.
        let copies = match upto {
            Some(upto) => {
                page(
                    consumer.database(),
                    collection,
                    id_range(after, Some(upto)),
                    None,
                )
                .await?
            }
            None => Vec::new(),
        };
        let mut copies: BTreeMap<i64, Document> = copies
            .into_iter()
            .filter_map(|d| Some((id_of(&d)?, d)))
            .collect();
        let (writes, verdicts) = judge(&images, &mut copies, collection, &mut tally);
        apply(consumer, &writes, &verdicts, options.dry_run, &mut tally).await?;
        orphans(
            producer,
            consumer,
            collection,
            copies.into_keys(),
            options,
            &mut tally,
        )
        .await?;
        progress(tally.checked);
        // The rate limit: never ahead of `max_per_second` since the start.
        let due = Duration::from_millis(
            tally.checked.saturating_mul(1000) / u64::from(options.max_per_second.max(1)),
        );
        tokio::time::sleep_until(started + due).await;
        if !full || upto.is_none() {
            after = upto.or(after);
            break;
        }
        after = upto;
    }
    // Past the producer's last id: only orphans, a page at a time.
    loop {
        let tail = page(
            consumer.database(),
            collection,
            id_range(after, None),
            Some(options.page_size),
        )
        .await?;
        let ids: Vec<i64> = tail.iter().filter_map(id_of).collect();
        let Some(&last) = ids.last() else { break };
        orphans(
            producer,
            consumer,
            collection,
            ids.into_iter(),
            options,
            &mut tally,
        )
        .await?;
        after = Some(last);
        if tail.len() < options.page_size as usize {
            break;
        }
    }
    Ok(tally)
}

async fn apply(
    consumer: &ImageRepository,
    writes: &[Write],
    verdicts: &[(i64, Verdict)],
    dry_run: bool,
    tally: &mut Tally,
) -> Result<(), ReconcileError> {
    let count = |tally: &mut Tally, verdict: &Verdict| match verdict {
        Verdict::Missing => tally.copied += 1,
        Verdict::Mistyped(_) => tally.retyped += 1,
        _ => tally.updated += 1,
    };
    if dry_run {
        for (id, verdict) in verdicts {
            tracing::info!(id, ?verdict, "would repair");
            count(tally, verdict);
        }
        return Ok(());
    }
    if writes.is_empty() {
        return Ok(());
    }
    let outcomes = consumer.apply(writes).await?;
    for ((id, verdict), outcome) in verdicts.iter().zip(outcomes) {
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
        }
    }
    Ok(())
}

async fn orphans(
    producer: &Database,
    consumer: &ImageRepository,
    collection: &str,
    ids: impl Iterator<Item = i64>,
    options: &Options,
    tally: &mut Tally,
) -> Result<(), ReconcileError> {
    for id in ids {
        // Created in the producer since its page was read (and streamed to the consumer
        // already)? Then it is no orphan.
        let filter = doc! { "id": id };
        let in_producer = producer
            .collection::<Document>(collection)
            .find_one(filter.clone())
            .projection(doc! { "_id": 1 })
            .await?;
        if in_producer.is_some() {
            continue;
        }
        tally.orphans += 1;
        if !options.delete_orphans {
            tracing::info!(collection, id, "only in the consumer DB");
            continue;
        }
        if options.dry_run {
            tally.deleted += 1;
            continue;
        }
        consumer
            .database()
            .collection::<Document>(collection)
            .delete_one(filter)
            .await
            .map_err(RepoError::from)?;
        tally.deleted += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ranges_are_one_predicate_on_id() {
        assert_eq!(id_range(None, None), doc! {});
        assert_eq!(id_range(Some(3), None), doc! { "id": { "$gt": 3_i64 } });
        assert_eq!(
            id_range(Some(3), Some(9)),
            doc! { "id": { "$gt": 3_i64, "$lte": 9_i64 } }
        );
    }
}
