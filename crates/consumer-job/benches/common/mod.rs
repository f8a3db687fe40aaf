//! What the job's benchmarks share: LIMS-sized events, fresh topics, a job config on them.

#![allow(dead_code)] // each bench uses a different part

use std::time::Duration;

use consumer_job::JobConfig;
use leafsync_test_support::{create_topic, kafka_brokers, mongo_uri, unique_name};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

pub const PLANTS: [&str; 3] = ["potato", "tomato", "pepper"];
pub const COLLECTIONS: [&str; 3] = [
    "imagecolplantpotato",
    "imagecolplanttomato",
    "imagecolplantpepper",
];

/// A LIMS create event for image `id` with `kb` KiB of JPEG-looking bytes, hex-encoded
/// (so ~2 × `kb` KiB of JSON, like the Image API's).
pub fn event(id: usize, kb: usize) -> String {
    let mut bytes = vec![0xff_u8, 0xd8, 0xff, 0xe0];
    bytes.extend((0..kb * 1024).map(|i| u8::try_from((i * 31 + id) % 251).unwrap_or(0)));
    serde_json::json!({
        "id": id, "camera_id": 1 + id % 4, "data": hex::encode(bytes),
        "gps_coordinates": [48.47, 16.58], "created_at": "2023-10-08T15:39:49.123123",
        "updated_at": null, "is_active": false, "is_deleted": false,
        "disease": null, "percentage": null,
    })
    .to_string()
}

/// Three fresh plant topics of `partitions` partitions each.
pub async fn fresh_topics(partitions: i32) -> Vec<String> {
    let topics: Vec<String> = PLANTS.iter().map(|p| unique_name(p)).collect();
    for t in &topics {
        create_topic(t, partitions).await;
    }
    topics
}

/// The job's default config on `topics`, a fresh group and a fresh database.
pub fn job_config(topics: &[String], batch: usize) -> JobConfig {
    JobConfig {
        kafka_brokers: kafka_brokers(),
        kafka_group_id: unique_name("bench"),
        topics: topics
            .iter()
            .zip(COLLECTIONS)
            .map(|(t, c)| format!("{t}={c}"))
            .collect::<Vec<_>>()
            .join(","),
        dlq_topic: unique_name("bench_dlq"),
        mongo_uri: mongo_uri(),
        mongo_db: unique_name("bench_job"),
        batch_max_messages: batch,
        metrics_addr: "127.0.0.1:0".parse().expect("address"),
        ..JobConfig::default()
    }
}

/// Produces `(key, value)` events round-robin by key to `topics`; returns once all are acked.
pub async fn produce(topics: &[String], events: &[(usize, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let sends = events.iter().map(|(i, e)| {
        let key = i.to_string();
        let topic = &topics[i % topics.len()];
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(e),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    });
    futures::future::join_all(sends).await;
}
