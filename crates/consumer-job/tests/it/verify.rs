//! `reconcile --watch` (the continuous verifier) beside a real job applying a live
//! stream: a producer DB written as LIMS writes it, each event sent right after its
//! write; drift injected straight into the consumer DB must show in the drift gauge
//! within one complete pass, and a healthy stream must never show any.

use std::time::Duration;

use consumer_job::verify::{self, Kind, Plant, VerifyMetrics};
use leafsync_core::{CollectionName, ImageRepository, WritePath, view::image_json};
use leafsync_test_support::{metric_value, mongo_client, unique_name};
use mongodb::{
    Database,
    bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype},
};
use serde_json::Value;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::common::{RunningJob, World, eventually, send_json};

/// How long an event takes from its producer write to Kafka.
const LAG: Duration = Duration::from_millis(500);

pub const COLL: &str = "imagecolplantpotato";

/// A producer image as LIMS stores it, created at `created_ms`.
pub fn lims_image(id: i32, created_ms: i64) -> Document {
    doc! {
        "id": id, "camera_id": 1,
        "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xff, 0xd8, 0xff, 0xe0, u8::try_from(id % 251).unwrap()] },
        "gps_coordinates": [48.47, 16.58],
        "created_at": DateTime::from_millis(created_ms),
        "updated_at": Bson::Null,
        "is_active": false, "is_deleted": false, "disease": Bson::Null, "percentage": Bson::Null,
    }
}

pub fn potato() -> Vec<Plant> {
    vec![Plant {
        label: "potato".to_owned(),
        collection: CollectionName::parse(COLL).expect("a valid name"),
    }]
}

pub fn options(page_size: u32) -> verify::Options {
    verify::Options {
        page_size,
        max_docs_per_second: 0,
        settle: Duration::from_secs(2),
        pass_pause: Duration::from_secs(1),
        repair: false,
        max_future_skew: Duration::from_secs(300),
    }
}

/// A verifier running in this process until its token fires.
pub struct Verifier {
    pub metrics: VerifyMetrics,
    pub cancel: CancellationToken,
    pub handle: JoinHandle<()>,
}

impl Verifier {
    pub fn start(
        producer: &Database,
        consumer: &ImageRepository,
        options: verify::Options,
    ) -> Self {
        let metrics = VerifyMetrics::new();
        let cancel = CancellationToken::new();
        let handle = tokio::spawn({
            let (producer, consumer) = (producer.clone(), consumer.clone());
            let (metrics, cancel) = (metrics.clone(), cancel.clone());
            async move {
                verify::watch(&producer, &consumer, &potato(), &options, &metrics, &cancel).await;
            }
        });
        Self {
            metrics,
            cancel,
            handle,
        }
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        metric_value(&self.metrics.render(), name, labels)
    }

    pub fn drift(&self, kind: Kind) -> u64 {
        self.metric(
            "leafsync_verify_drift",
            &[("plant", "potato"), ("kind", kind.as_str())],
        )
    }

    pub async fn wait_passes(&self, n: u64, secs: u64) {
        eventually(secs, &format!("{n} complete passes"), || async {
            let done = self.metrics.completed_passes("potato");
            if done >= n {
                Ok(())
            } else {
                Err(format!("{done}"))
            }
        })
        .await;
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the verifier stops within 30 s")
            .expect("the verifier did not panic");
    }
}

/// LIMS at work: images created and updated in the producer DB, each change sent as its
/// event half a second later (the stream's lag: the consumer DB trails the producer DB
/// by more than a second read takes); ids below `untouched` are created once and never
/// updated.
struct Stream {
    world: World,
    job: RunningJob,
    producer: Database,
    repo: ImageRepository,
    stop: CancellationToken,
    lims: JoinHandle<u64>,
}

async fn stream(seed: i32, untouched: i32) -> Stream {
    let world = World::with_topics(1).await;
    let client = mongo_client().await;
    let producer = client.database(&unique_name("producer"));
    let repo = ImageRepository::new(client.clone(), &world.db, WritePath::Auto);
    let job = world.start().await;
    job.wait_metric("leafsync_job_assigned_partitions", &[], 3, 60)
        .await;
    let coll = producer.collection::<Document>(COLL);
    let kafka = world.producer();
    let topic = world.plants[0].clone();
    for id in 1..=seed {
        let image = lims_image(id, DateTime::now().timestamp_millis());
        coll.insert_one(&image).await.unwrap();
        send_json(&kafka, &topic, &image_json(&image)).await;
    }
    crate::common::wait_applied(&job, u64::try_from(seed).unwrap()).await;
    let (events, mut delayed) = tokio::sync::mpsc::unbounded_channel::<(Instant, Value)>();
    tokio::spawn(async move {
        while let Some((at, event)) = delayed.recv().await {
            tokio::time::sleep_until(at + LAG).await;
            send_json(&kafka, &topic, &event).await;
        }
    });
    let stop = CancellationToken::new();
    let lims = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut next = seed + 1;
            let mut changes = 0;
            while !stop.is_cancelled() {
                // One create, then three updates of images the stream owns.
                let image = if changes % 4 == 0 {
                    let image = lims_image(next, DateTime::now().timestamp_millis());
                    coll.insert_one(&image).await.unwrap();
                    next += 1;
                    image
                } else {
                    let id = untouched + (changes * 7) % (next - untouched);
                    let disease = ["Healthy", "Leaf mold", "Early blight"]
                        [usize::try_from(changes % 3).unwrap()];
                    coll.find_one_and_update(
                        doc! { "id": id },
                        doc! { "$set": { "updated_at": DateTime::now(), "disease": disease, "percentage": 0.9 } },
                    )
                    .return_document(mongodb::options::ReturnDocument::After)
                    .await
                    .unwrap()
                    .unwrap()
                };
                let _ = events.send((Instant::now(), image_json(&image)));
                changes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            u64::try_from(changes).unwrap()
        }
    });
    Stream {
        world,
        job,
        producer,
        repo,
        stop,
        lims,
    }
}

impl Stream {
    async fn stop(self) -> u64 {
        self.stop.cancel();
        let changes = self.lims.await.unwrap();
        self.job.stop().await;
        changes
    }
}

#[tokio::test]
async fn a_verifier_beside_a_healthy_stream_reports_no_drift_in_any_pass() {
    let s = stream(200, 1).await;
    let verifier = Verifier::start(&s.producer, &s.repo, options(50));
    let started = tokio::time::Instant::now();
    let (mut max_drift, mut max_in_flight) = (0, 0);
    while started.elapsed() < Duration::from_secs(30) {
        let drift: u64 = Kind::ALL.iter().map(|k| verifier.drift(*k)).sum();
        max_drift = max_drift.max(drift);
        max_in_flight = max_in_flight.max(verifier.metric("leafsync_verify_in_flight", &[]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let passes = verifier.metrics.completed_passes("potato");
    let checked = verifier.metric("leafsync_verify_images_checked_total", &[]);
    verifier.stop().await;
    let changes = s.stop().await;
    assert!(passes >= 5, "{passes} passes");
    assert!(changes > 300, "the stream ran: {changes} changes");
    assert_eq!(max_drift, 0, "no pass of {passes} reported drift");
    assert!(
        max_in_flight > 0,
        "images in flight were seen (and not counted as drift): {checked} checked"
    );
}

#[tokio::test]
async fn each_kind_of_drift_injected_while_events_flow_is_reported_within_one_complete_pass() {
    let s = stream(100, 11).await;
    let verifier = Verifier::start(&s.producer, &s.repo, options(20));
    verifier.wait_passes(1, 60).await;
    for kind in Kind::ALL {
        assert_eq!(verifier.drift(kind), 0, "{kind:?} before the injection");
    }
    // Images 1..=10 are settled (created more than the settle time ago, never updated).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let consumer = s.world.mongo().await.collection::<Document>(COLL);
    consumer.delete_one(doc! { "id": 1 }).await.unwrap();
    let old = DateTime::now().timestamp_millis() - 3_600_000;
    consumer
        .insert_one(lims_image(1_000_000, old))
        .await
        .unwrap();
    let set = |id: i32, fields: Document| {
        let consumer = consumer.clone();
        async move {
            let r = consumer
                .update_one(doc! { "id": id }, doc! { "$set": fields })
                .await
                .unwrap();
            assert_eq!(r.modified_count, 1, "#{id}");
        }
    };
    set(2, doc! { "camera_id": 99 }).await;
    set(3, doc! { "data": "ffd8ffe003" }).await;
    let future = DateTime::parse_rfc3339_str("2999-01-01T00:00:00Z").unwrap();
    set(4, doc! { "updated_at": future }).await;
    let injected = verifier.metrics.completed_passes("potato");
    eventually(60, "every kind of drift in the gauge", || async {
        let found: Vec<(Kind, u64)> = Kind::ALL.iter().map(|k| (*k, verifier.drift(*k))).collect();
        if found.iter().all(|(_, n)| *n == 1) {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
    let passes = verifier.metrics.completed_passes("potato") - injected;
    assert!(
        passes <= 2,
        "the pass under way at the injection, then one complete pass: {passes}"
    );
    verifier.stop().await;
    s.stop().await;
}
