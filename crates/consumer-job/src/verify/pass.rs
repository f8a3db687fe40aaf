//! One pass over one plant: the walk from the checkpoint, every id judged, a difference
//! confirmed by a second read, in-flight ids re-checked at the end after the settle time,
//! the checkpoint saved every page, the rate limit kept, and the pass's result in the
//! metrics and one log line.

use std::collections::HashMap;

use futures::TryStreamExt;
use leafsync_core::{ImageRepository, compare::id_of};
use mongodb::{
    Collection, Database,
    bson::{DateTime, Document, doc},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Checkpoint, CheckpointStore, Judged, Kind, Options, Plant, VerifyError, VerifyMetrics, judge,
    now_ms, pause,
};
use crate::reconcile::walk::{Pair, Walk};

/// Ids kept for the end-of-pass re-check at most (memory bound); past it an image in
/// flight is only counted.
const MAX_PENDING: usize = 10_000;
/// Drifted images logged one by one per pass and plant at most (the rest: counted).
const MAX_LOGGED: u64 = 20;

/// What the verifier works with.
pub(super) struct Verifier<'a> {
    pub producer: &'a Database,
    pub consumer: &'a ImageRepository,
    pub options: &'a Options,
    pub metrics: &'a VerifyMetrics,
    pub cancel: &'a CancellationToken,
}

/// A pass under way, beside its checkpoint.
struct Run<'p> {
    plant: &'p Plant,
    cp: Checkpoint,
    /// In flight during the walk: re-checked at the end.
    pending: Vec<i64>,
    /// The latest change time (epoch ms) of a pending id.
    latest: i64,
    /// Drift to repair: id, the producer's image, the consumer's copy.
    repairs: Vec<(i64, Document, Option<Document>)>,
    /// Documents the walk read.
    walked: u64,
    /// Documents read outside the walk (confirmations, re-checks).
    reads: u64,
    started: Instant,
}

impl Verifier<'_> {
    fn collections(&self, plant: &Plant) -> (Collection<Document>, Collection<Document>) {
        let name = plant.collection.as_str();
        (
            self.producer.collection(name),
            self.consumer.database().collection(name),
        )
    }

    /// One pass of `plant`, from its checkpoint to its end (or to a cancellation, with
    /// the checkpoint saved).
    pub(super) async fn pass(&self, plant: &Plant) -> Result<(), VerifyError> {
        let store = CheckpointStore::new(self.consumer.database(), plant.collection.as_str());
        let mut cp = store.load().await?.unwrap_or_else(|| Checkpoint::fresh(1));
        if cp.is_fresh() {
            cp.pass_started_at = DateTime::now();
            store.save(&cp).await?;
        } else {
            tracing::info!(
                plant = plant.label,
                pass = cp.pass,
                after = cp.last_id,
                "resuming the pass"
            );
        }
        let page = self.options.page_size.max(1);
        let (producer, consumer) = self.collections(plant);
        let mut walk = Walk::new(producer, consumer, page, cp.last_id);
        let mut run = Run {
            plant,
            cp,
            pending: Vec::new(),
            latest: 0,
            repairs: Vec::new(),
            walked: 0,
            reads: 0,
            started: Instant::now(),
        };
        let mut n: u64 = 0;
        loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => return self.stop(&store, &mut run).await,
                next = walk.next() => next?,
            };
            let Some((id, pair)) = next else { break };
            let (p, c) = match pair {
                Pair::Both { producer, consumer } => (Some(producer), Some(consumer)),
                Pair::ProducerOnly(p) => (Some(p), None),
                Pair::ConsumerOnly(c) => (None, Some(c)),
            };
            self.check(&mut run, id, p, c).await?;
            run.cp.last_id = Some(id);
            n += 1;
            if n % u64::from(page) == 0 {
                self.metrics.set_ready(true);
                self.flush(&mut run).await?;
                store.save(&run.cp).await?;
                run.walked = walk.read();
                if !self.throttle(&run).await {
                    return self.stop(&store, &mut run).await;
                }
            }
        }
        self.metrics.set_ready(true);
        run.walked = walk.read();
        if !self.recheck(&mut run).await? {
            return self.stop(&store, &mut run).await;
        }
        self.flush(&mut run).await?;
        let cp = &run.cp;
        let took = u64::try_from(now_ms() - cp.pass_started_at.timestamp_millis()).unwrap_or(0);
        let took = std::time::Duration::from_millis(took);
        self.metrics
            .pass_complete(&plant.label, &cp.drift, cp.in_flight, took);
        let d = |kind| cp.drift.get(kind);
        tracing::info!(
            plant = plant.label,
            pass = cp.pass,
            checked = cp.checked,
            missing = d(Kind::Missing),
            extra = d(Kind::Extra),
            value = d(Kind::Value),
            r#type = d(Kind::Type),
            future = d(Kind::Future),
            in_flight = cp.in_flight,
            seconds = took.as_secs_f64(),
            "verification pass complete"
        );
        store.save(&Checkpoint::fresh(cp.pass + 1)).await?;
        Ok(())
    }

    /// Judges one id from the walk; a difference outside the settle time is read again
    /// from both sides before it counts.
    async fn check(
        &self,
        run: &mut Run<'_>,
        id: i64,
        p: Option<Document>,
        c: Option<Document>,
    ) -> Result<(), VerifyError> {
        self.metrics
            .checked
            .with_label_values(&[&run.plant.label])
            .inc();
        run.cp.checked += 1;
        let judged = judge(p.as_ref(), c.as_ref(), now_ms(), self.options);
        let (p, c, judged) = if let Judged::Drift(_) = judged {
            let (producer, consumer) = self.collections(run.plant);
            let p = producer.find_one(doc! { "id": id }).await?;
            let c = consumer.find_one(doc! { "id": id }).await?;
            run.reads += 2;
            let judged = judge(p.as_ref(), c.as_ref(), now_ms(), self.options);
            (p, c, judged)
        } else {
            (p, c, judged)
        };
        match judged {
            Judged::InSync => {}
            Judged::InFlight(at) => {
                run.cp.in_flight += 1;
                if run.pending.len() < MAX_PENDING {
                    run.pending.push(id);
                    run.latest = run.latest.max(at);
                }
            }
            Judged::Drift(kind) => self.drifted(run, id, kind, p, c),
        }
        Ok(())
    }

    fn drifted(
        &self,
        run: &mut Run<'_>,
        id: i64,
        kind: Kind,
        p: Option<Document>,
        c: Option<Document>,
    ) {
        if run.cp.drift.total() < MAX_LOGGED {
            tracing::info!(plant = run.plant.label, id, kind = kind.as_str(), "drift");
        }
        run.cp.drift.add(kind, 1);
        if let (true, Some(p)) = (self.options.repair, p) {
            run.repairs.push((id, p, c));
        }
    }

    /// The ids in flight during the walk, once their settle time is over: drift if they
    /// still differ and are settled. `false` when cancelled.
    async fn recheck(&self, run: &mut Run<'_>) -> Result<bool, VerifyError> {
        if run.pending.is_empty() {
            return Ok(true);
        }
        let settle = self.options.settle;
        let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
        let wait = run.latest.saturating_add(settle_ms) + 1 - now_ms();
        let wait = std::time::Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(settle);
        if !pause(wait, self.cancel).await {
            return Ok(false);
        }
        let (producer, consumer) = self.collections(run.plant);
        let pending = std::mem::take(&mut run.pending);
        for chunk in pending.chunks(self.options.page_size.max(1) as usize) {
            let mut ps = by_id(&producer, chunk).await?;
            let mut cs = by_id(&consumer, chunk).await?;
            run.reads += (ps.len() + cs.len()) as u64;
            for id in chunk {
                let (p, c) = (ps.remove(id), cs.remove(id));
                if let Judged::Drift(kind) = judge(p.as_ref(), c.as_ref(), now_ms(), self.options) {
                    self.drifted(run, *id, kind, p, c);
                }
            }
            self.flush(run).await?;
            if !self.throttle(run).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies the repairs gathered so far (`--repair`).
    async fn flush(&self, run: &mut Run<'_>) -> Result<(), VerifyError> {
        if run.repairs.is_empty() {
            return Ok(());
        }
        let repairs = std::mem::take(&mut run.repairs);
        let tally = crate::reconcile::repair(
            self.consumer,
            &run.plant.collection,
            repairs,
            self.options.max_future_skew,
        )
        .await?;
        self.metrics
            .repaired
            .with_label_values(&[&run.plant.label])
            .inc_by(tally.copied + tally.updated + tally.retyped + tally.future);
        Ok(())
    }

    /// Waits until the documents read are within the rate limit since the pass (or its
    /// resumption) started; `false` when cancelled.
    async fn throttle(&self, run: &Run<'_>) -> bool {
        let rate = u64::from(self.options.max_docs_per_second);
        if rate == 0 {
            return !self.cancel.is_cancelled();
        }
        let due = std::time::Duration::from_millis((run.walked + run.reads) * 1000 / rate);
        let wait = (run.started + due).saturating_duration_since(Instant::now());
        pause(wait, self.cancel).await
    }

    /// Cancelled: the repairs gathered are applied and the checkpoint saved.
    async fn stop(&self, store: &CheckpointStore, run: &mut Run<'_>) -> Result<(), VerifyError> {
        self.flush(run).await?;
        store.save(&run.cp).await?;
        tracing::info!(
            plant = run.plant.label,
            pass = run.cp.pass,
            last_id = run.cp.last_id,
            "verifier stopped; the pass resumes from here"
        );
        Ok(())
    }
}

/// The documents of `ids` in `coll`, by id.
async fn by_id(
    coll: &Collection<Document>,
    ids: &[i64],
) -> mongodb::error::Result<HashMap<i64, Document>> {
    let docs: Vec<Document> = coll
        .find(doc! { "id": { "$in": ids } })
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| Some((id_of(&d)?, d)))
        .collect())
}
