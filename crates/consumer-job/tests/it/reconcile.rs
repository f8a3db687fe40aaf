//! `reconcile` against SecantusDB: a producer DB written as LIMS writes it (BSON Binary,
//! Dates) and a drifted consumer DB beside it, each test in databases of its own.

use std::{process::Command, time::Duration};

use crate::common::{World, send_json};
use consumer_job::reconcile::{Options, Tally, exit_code, reconcile};
use futures::TryStreamExt;
use leafsync_core::{
    ImageChange, ImageRepository, WritePath,
    compare::{Verdict, classify},
    view::image_json,
};
use leafsync_test_support::{mongo_client, mongo_uri, unique_name};
use mongodb::{
    Database,
    bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype},
};
use serde_json::Value;

const COLL: &str = "imagecolplantpotato";

fn coll() -> leafsync_core::CollectionName {
    leafsync_core::CollectionName::parse(COLL).expect("a valid name")
}

/// A producer image as LIMS stores it; `updated_ms` None for one never updated.
fn lims_image(id: i32, updated_ms: Option<i64>, disease: Option<&str>) -> Document {
    doc! {
        "id": id, "camera_id": 1,
        "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xff, 0xd8, 0xff, 0xe0, u8::try_from(id).unwrap()] },
        "gps_coordinates": [48.47, 16.58],
        "created_at": DateTime::from_millis(1_696_779_589_123),
        "updated_at": updated_ms.map_or(Bson::Null, |ms| Bson::DateTime(DateTime::from_millis(ms))),
        "is_active": false, "is_deleted": false,
        "disease": disease.map_or(Bson::Null, |d| Bson::String(d.to_owned())),
        "percentage": if disease.is_some() { Bson::Double(0.995) } else { Bson::Null },
    }
}

/// As an older consumer stored it: hex for `data`, ISO strings for the dates.
fn mistyped(image: &Document) -> Document {
    let Value::Object(json) = image_json(image) else {
        unreachable!()
    };
    let mut doc = Document::new();
    for (key, value) in json {
        let bson = match value {
            Value::String(s) => Bson::String(s),
            other => Bson::try_from(other).unwrap(),
        };
        doc.insert(key, bson);
    }
    doc
}

const T1: i64 = 1_696_880_714_792;
const T2: i64 = T1 + 60_000;

struct Drift {
    producer: Database,
    consumer: Database,
    repo: ImageRepository,
}

/// Producer images 1..=5; in the consumer: 1 missing, 2 stale, 3 mistyped, 4 newer,
/// 5 in sync (written by the job's own path), 9 only there.
async fn drift() -> Drift {
    let client = mongo_client().await;
    let producer = client.database(&unique_name("producer"));
    let consumer = client.database(&unique_name("consumer"));
    let images: Vec<Document> = (1..=5)
        .map(|id| lims_image(id, Some(T1), Some("Healthy")))
        .collect();
    producer
        .collection::<Document>(COLL)
        .insert_many(images.clone())
        .await
        .unwrap();
    let repo = ImageRepository::new(client.clone(), consumer.name(), WritePath::Auto);
    repo.ensure_indexes(&[COLL]).await.unwrap();
    let target = consumer.collection::<Document>(COLL);
    target
        .insert_many([
            lims_image(2, Some(T1 - 1_000), None),
            mistyped(&images[2]),
            lims_image(4, Some(T2), Some("Leaf mold")),
            lims_image(9, None, None),
        ])
        .await
        .unwrap();
    let Value::Object(event) = image_json(&images[4]) else {
        unreachable!()
    };
    repo.apply(&[leafsync_core::Write {
        collection: coll(),
        change: ImageChange::from_json_object(event).unwrap(),
    }])
    .await
    .unwrap();
    Drift {
        producer,
        consumer,
        repo,
    }
}

fn options(dry_run: bool, delete_orphans: bool) -> Options {
    Options {
        page_size: 2, // several pages, and ids on both sides of page edges
        max_per_second: 10_000,
        dry_run,
        delete_orphans,
        max_future_skew: Duration::from_secs(300),
    }
}

async fn run(d: &Drift, options: &Options) -> Tally {
    reconcile(&d.producer, &d.repo, &coll(), options, &mut |_| {})
        .await
        .expect("reconcile runs")
}

async fn all(db: &Database) -> Vec<Document> {
    db.collection::<Document>(COLL)
        .find(doc! {})
        .sort(doc! { "id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

async fn verdict(d: &Drift, id: i32) -> Verdict {
    let coll = |db: &Database| db.collection::<Document>(COLL);
    let p = coll(&d.producer)
        .find_one(doc! { "id": id })
        .await
        .unwrap()
        .unwrap();
    let c = coll(&d.consumer).find_one(doc! { "id": id }).await.unwrap();
    classify(
        &p,
        c.as_ref(),
        consumer_job::reconcile::horizon(Duration::from_secs(300)),
    )
}

#[tokio::test]
async fn a_run_copies_missing_updates_stale_retypes_mistyped_keeps_newer_and_reports_orphans() {
    let d = drift().await;
    let tally = run(&d, &options(false, false)).await;
    assert_eq!(
        tally,
        Tally {
            checked: 5,
            in_sync: 1,
            copied: 1,
            updated: 1,
            retyped: 1,
            kept_newer: 1,
            orphans: 1,
            ..Tally::default()
        }
    );
    for id in [1, 2, 3, 5] {
        assert_eq!(
            verdict(&d, id).await,
            Verdict::InSync,
            "#{id}, types included"
        );
    }
    assert_eq!(
        verdict(&d, 4).await,
        Verdict::ConsumerNewer,
        "never moved back"
    );
    assert_eq!(
        d.consumer
            .collection::<Document>(COLL)
            .count_documents(doc! { "id": 9 })
            .await
            .unwrap(),
        1,
        "an orphan is kept unless asked"
    );
    let plants = [("potato".to_owned(), tally)];
    assert_eq!(exit_code(&plants, false), 2, "the orphan remains");

    let tally = run(&d, &options(false, true)).await;
    assert_eq!(
        (
            tally.orphans,
            tally.deleted,
            tally.in_sync,
            tally.kept_newer
        ),
        (1, 1, 4, 1)
    );
    assert_eq!(exit_code(&[("potato".to_owned(), tally)], false), 0);

    let before = all(&d.consumer).await;
    let tally = run(&d, &options(false, true)).await;
    assert_eq!(
        tally,
        Tally {
            checked: 5,
            in_sync: 4,
            kept_newer: 1,
            ..Tally::default()
        },
        "a rerun is a no-op"
    );
    assert_eq!(all(&d.consumer).await, before);
}

/// A LIMS pod with a wrong clock stored year 2999 in the consumer DB: it is drift of its
/// own kind, and the repair puts the producer's older version back.
#[tokio::test]
async fn a_consumer_version_ahead_of_the_producer_and_the_clock_is_replaced_by_the_producer_version()
 {
    let d = drift().await;
    let future = DateTime::parse_rfc3339_str("2999-01-01T00:00:00Z").unwrap();
    let target = d.consumer.collection::<Document>(COLL);
    target
        .update_one(
            doc! { "id": 5 },
            doc! { "$set": {
                "updated_at": future, "disease": "Leaf mold",
                leafsync_core::VERSION_FIELD: future.timestamp_millis() * 1000,
            } },
        )
        .await
        .unwrap();
    assert!(matches!(verdict(&d, 5).await, Verdict::Future(_)));
    let tally = run(&d, &options(true, false)).await;
    assert_eq!(tally.future, 1, "a dry run counts it: {tally:?}");
    assert_eq!(exit_code(&[("potato".to_owned(), tally)], true), 2);
    assert!(matches!(verdict(&d, 5).await, Verdict::Future(_)), "dry");

    let tally = run(&d, &options(false, false)).await;
    assert_eq!((tally.future, tally.kept_newer), (1, 1), "{tally:?}");
    assert_eq!(verdict(&d, 5).await, Verdict::InSync);
    let repaired = target.find_one(doc! { "id": 5 }).await.unwrap().unwrap();
    assert_eq!(
        repaired.get_i64(leafsync_core::VERSION_FIELD).unwrap(),
        T1 * 1000,
        "the microsecond version goes back too, or the guard would still refuse"
    );
    let summary = consumer_job::reconcile::Summary {
        plants: &[("potato".to_owned(), tally)],
        dry_run: false,
    }
    .to_string();
    assert!(
        summary.contains("replaced by the producer's version although it is older"),
        "{summary}"
    );
}

/// Sparse producer ids over a dense consumer range: both sides are paged, every id is
/// paired right across page edges.
#[tokio::test]
async fn sparse_producer_ids_over_a_dense_consumer_range_are_paired_page_by_page() {
    let client = mongo_client().await;
    let producer = client.database(&unique_name("producer"));
    let consumer = client.database(&unique_name("consumer"));
    producer
        .collection::<Document>(COLL)
        .insert_many([1, 25, 49].map(|id| lims_image(id, Some(T1), None)))
        .await
        .unwrap();
    let repo = ImageRepository::new(client.clone(), consumer.name(), WritePath::Auto);
    repo.ensure_indexes(&[COLL]).await.unwrap();
    consumer
        .collection::<Document>(COLL)
        .insert_many((1..=50).map(|id| lims_image(id, Some(T1), None)))
        .await
        .unwrap();
    let options = Options {
        page_size: 3,
        ..options(false, true)
    };
    let tally = reconcile(&producer, &repo, &coll(), &options, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        (tally.checked, tally.in_sync, tally.orphans, tally.deleted),
        (3, 3, 47, 47),
        "{tally:?}"
    );
    assert_eq!(all(&consumer).await.len(), 3);
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_counts_what_it_would_do() {
    let d = drift().await;
    let before = all(&d.consumer).await;
    let tally = run(&d, &options(true, true)).await;
    assert_eq!(
        (
            tally.copied,
            tally.updated,
            tally.retyped,
            tally.kept_newer,
            tally.orphans,
            tally.deleted
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(all(&d.consumer).await, before, "nothing changed");
    assert_eq!(exit_code(&[("potato".to_owned(), tally)], true), 2);
}

#[tokio::test]
async fn a_run_beside_the_job_applying_newer_events_never_moves_an_image_back() {
    const N: i32 = 120;
    let world = World::with_topics(1).await;
    let client = mongo_client().await;
    let producer = client.database(&unique_name("producer"));
    let older: Vec<Document> = (1..=N).map(|id| lims_image(id, Some(T1), None)).collect();
    producer
        .collection::<Document>(COLL)
        .insert_many(older)
        .await
        .unwrap();
    let job = world.start().await;
    // The job owns its partitions before the race starts, so the two overlap.
    job.wait_metric("leafsync_job_assigned_partitions", &[], 3, 60)
        .await;
    // reconcile reaches the consumer DB through a proxy that holds every answer 200 ms:
    // between its read of a page and its writes, the job lands newer versions of the
    // same ids, which the stale guard must keep.
    let upstream = leafsync_test_support::mongo_addr();
    let proxy = leafsync_test_support::latency_proxy(upstream, Duration::from_millis(200)).await;
    let slow = mongodb::Client::with_uri_str(format!("mongodb://127.0.0.1:{proxy}"))
        .await
        .unwrap();
    let repo = ImageRepository::new(slow, &world.db, WritePath::Auto);
    let kafka = world.producer();
    let plant = world.plants[0].clone();
    let newer = tokio::spawn(async move {
        for id in 1..=N {
            let event = image_json(&lims_image(id, Some(T2), Some("Healthy")));
            send_json(&kafka, &plant, &event).await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let options = Options {
        page_size: 10,
        ..options(false, false)
    };
    let tally = reconcile(&producer, &repo, &coll(), &options, &mut |_| {})
        .await
        .unwrap();
    newer.await.unwrap();
    crate::common::wait_applied(&job, u64::try_from(N).unwrap()).await;
    job.stop().await;
    assert_eq!(tally.checked, u64::try_from(N).unwrap());
    assert_eq!(tally.failed + tally.unrepaired, 0, "{tally:?}");
    // The job runs ahead of reconcile's slow path: some of its versions landed first.
    assert!(tally.kept_newer > 0, "the two overlapped: {tally:?}");
    let consumer = client.database(&world.db);
    let images = all(&consumer).await;
    assert_eq!(images.len(), usize::try_from(N).unwrap());
    for doc in images {
        let id = doc.get_i32("id").unwrap();
        assert_eq!(
            doc.get_datetime("updated_at").unwrap().timestamp_millis(),
            T2,
            "#{id} went back in time ({tally:?})"
        );
        assert_eq!(doc.get_str("disease").unwrap(), "Healthy", "#{id}");
    }
}

#[tokio::test]
async fn the_binary_prints_a_summary_and_exits_2_on_a_dry_run_then_0_once_repaired() {
    let d = drift().await;
    let reconcile = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reconcile"))
            .args([
                "--producer-uri",
                &mongo_uri(),
                "--producer-db",
                d.producer.name(),
            ])
            .args(["--plant", "potato"])
            .args(extra)
            .env("LEAFSYNC_MONGO_URI", mongo_uri())
            .env("LEAFSYNC_MONGO_DB", d.consumer.name())
            .output()
            .expect("reconcile runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, summary, stderr) = reconcile(&["--dry-run"]);
    assert_eq!(code, Some(2), "{summary}{stderr}");
    assert!(summary.contains("dry run: nothing changed"), "{summary}");
    assert!(
        summary.lines().any(|l| l.starts_with("potato")),
        "{summary}"
    );
    assert!(
        stderr.contains("potato: 5 images checked"),
        "plain progress off a terminal: {stderr}"
    );
    let (code, summary, stderr) = reconcile(&["--delete-orphans"]);
    assert_eq!(code, Some(0), "{summary}{stderr}");
    assert!(summary.contains("0 difference(s) remain"), "{summary}");
    let (code, _, stderr) = reconcile(&["--plant", "corn"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--plant corn"), "{stderr}");
}
