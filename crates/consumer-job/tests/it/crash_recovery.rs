//! Crashes that only a genuine Kafka broker lets us test, on real processes: the job
//! SIGKILLed mid-stream and restarted at once (a pod's container restart), and the Kafka
//! JVM SIGKILLed mid-stream and restarted under a running job. Both with LIMS's real
//! topology (one partition per topic) and with three.

use std::time::{Duration, Instant};

use crate::common::{
    COLLECTIONS, JobProcess, World, created, eventually, send_json, start_job,
    wait_committed_to_end,
};
use leafsync_test_support::KafkaProcess;
use mongodb::bson::{Bson, Document, doc};
use rdkafka::producer::FutureProducer;
use serde_json::json;

/// Images per test; every one gets a create and then an update.
const IMAGES: i64 = 300;

/// The update event of image `id`: a newer version that flips `is_active`.
fn updated(id: i64) -> serde_json::Value {
    json!({"id": id, "is_active": true, "disease": "Healthy",
           "updated_at": format!("2023-10-09T10:00:{:02}.{id:06}", id % 60)})
}

fn plant_of(w: &World, id: i64) -> &str {
    &w.plants[usize::try_from(id % 3).expect("small")]
}

async fn produce(w: &World, producer: &FutureProducer, ids: std::ops::RangeInclusive<i64>) {
    for id in ids.clone() {
        send_json(producer, plant_of(w, id), &created(id, 4)).await;
    }
    for id in ids {
        send_json(producer, plant_of(w, id), &updated(id)).await;
    }
}

/// Every image is in its plant's collection exactly once, at its update's version.
async fn wait_exact(w: &World, n: i64) {
    let db = w.mongo().await;
    eventually(120, "every image at its newest version", || async {
        let mut wrong = Vec::new();
        for (plant, collection) in COLLECTIONS.iter().enumerate() {
            let docs: Vec<Document> = {
                use futures::TryStreamExt;
                db.collection::<Document>(collection)
                    .find(doc! {})
                    .await
                    .map_err(|e| e.to_string())?
                    .try_collect()
                    .await
                    .map_err(|e| e.to_string())?
            };
            let expected = (1..=n).filter(|id| id % 3 == i64::try_from(plant).unwrap_or(0));
            if docs.len() != expected.clone().count() {
                wrong.push(format!("{collection}: {} docs", docs.len()));
                continue;
            }
            for id in expected {
                let doc = docs
                    .iter()
                    .find(|d| d.get_i32("id").map(i64::from) == Ok(id) || d.get_i64("id") == Ok(id));
                let ok = doc.is_some_and(|d| {
                    d.get_bool("is_active") == Ok(true)
                        && d.get_str("disease") == Ok("Healthy")
                        && matches!(d.get("updated_at"), Some(Bson::DateTime(_)))
                        && matches!(d.get("data"), Some(Bson::Binary(b)) if b.bytes.len() == 4 * 1024 + 4)
                });
                if !ok {
                    wrong.push(format!("{collection} #{id}"));
                }
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{} wrong: {:?}", wrong.len(), &wrong[..wrong.len().min(5)]))
        }
    })
    .await;
}

async fn a_killed_job_restarted_at_once_resumes(partitions: i32) {
    let w = World::with_topics(partitions).await;
    let producer = w.producer();
    produce(&w, &producer, 1..=IMAGES).await;
    let mut config = w.config();
    // Small batches keep the first instance mid-stream when it is killed.
    config.batch_max_messages = 10;

    let first = JobProcess::spawn(&config);
    eventually(
        60,
        "the first instance applies part of the stream",
        || async {
            let n = first.metric("leafsync_job_images_total", &[]).await;
            if n >= u64::try_from(IMAGES / 2).expect("positive") {
                Ok(())
            } else {
                Err(format!("{n} applied"))
            }
        },
    )
    .await;
    let applied = first.metric("leafsync_job_images_total", &[]).await;
    first.kill();
    assert!(
        applied < u64::try_from(2 * IMAGES).expect("positive"),
        "the crash came mid-stream ({applied} of {} records applied)",
        2 * IMAGES
    );

    let killed_at = Instant::now();
    let second = JobProcess::spawn(&config);
    eventually(60, "the restarted instance applies records", || async {
        let n = second.metric("leafsync_job_images_total", &[]).await;
        if n > 0 {
            Ok(())
        } else {
            Err("nothing yet".to_owned())
        }
    })
    .await;
    let resumed = killed_at.elapsed();
    eprintln!("{partitions} partition(s): resumed {resumed:?} after the crash");
    let bound =
        Duration::from_millis(u64::from(config.kafka_session_timeout_ms)) + Duration::from_secs(8);
    assert!(
        resumed <= bound,
        "resumed {resumed:?} after the crash; the dead member's session ends after {} ms",
        config.kafka_session_timeout_ms
    );
    wait_exact(&w, IMAGES).await;
    wait_committed_to_end(&w.brokers, &w.group, &w.plants, 60).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_stream_and_restarted_at_once_resumes_within_the_session_timeout_one_partition()
 {
    a_killed_job_restarted_at_once_resumes(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_stream_and_restarted_at_once_resumes_within_the_session_timeout_three_partitions()
 {
    a_killed_job_restarted_at_once_resumes(3).await;
}

async fn a_kafka_crash_loses_nothing(partitions: i32) {
    let mut w = World::new(String::new(), leafsync_test_support::mongo_uri());
    let topics: Vec<&str> = w.plants.iter().map(String::as_str).collect();
    let kafka = tokio::task::block_in_place(|| KafkaProcess::start(&topics, &w.dlq, partitions));
    w.brokers = kafka.brokers();
    let producer = w.producer();
    let job = start_job(w.config()).await;

    let half = IMAGES / 2;
    produce(&w, &producer, 1..=half).await;
    job.wait_metric("leafsync_job_images_total", &[], 10, 60)
        .await;
    let applied = job.metric("leafsync_job_images_total", &[]);
    assert!(
        applied < u64::try_from(2 * half).expect("positive"),
        "mid-stream: {applied} applied"
    );
    tokio::task::block_in_place(|| {
        kafka.kill();
        std::thread::sleep(Duration::from_secs(1));
        kafka.restart();
    });
    // The producer retries across the outage; the job must reconnect by itself.
    produce(&w, &producer, half + 1..=IMAGES).await;
    wait_exact(&w, IMAGES).await;
    wait_committed_to_end(&w.brokers, &w.group, &w.plants, 120).await;
    assert!(
        !job.handle.is_finished(),
        "the job kept running through the broker crash"
    );
    job.stop().await;
    drop(kafka);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_broker_killed_mid_stream_and_restarted_loses_nothing_one_partition() {
    a_kafka_crash_loses_nothing(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_broker_killed_mid_stream_and_restarted_loses_nothing_three_partitions() {
    a_kafka_crash_loses_nothing(3).await;
}
