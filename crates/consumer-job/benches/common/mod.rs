//! What the job's benchmarks share: LIMS-sized events, fresh topics, a job config on them.

#![allow(dead_code)] // each bench uses a different part

use std::time::Duration;

use consumer_job::JobConfig;
use leafsync_test_support::{create_topic_with, kafka_brokers, mongo_uri, unique_name};
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
    fresh_topics_for(partitions, 1_000_000).await
}

/// [`fresh_topics`] that take records up to `max_record_bytes` (the topic's
/// `max.message.bytes`; the broker's default is about 1 MB).
pub async fn fresh_topics_for(partitions: i32, max_record_bytes: usize) -> Vec<String> {
    let topics: Vec<String> = PLANTS.iter().map(|p| unique_name(p)).collect();
    let limit = (max_record_bytes + 64 * 1024).to_string();
    for t in &topics {
        create_topic_with(t, partitions, &[("max.message.bytes", &limit)]).await;
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
        batch_max_bytes: leafsync_test_support::env_or(
            "BENCH_BATCH_BYTES",
            JobConfig::default().batch_max_bytes,
        ),
        metrics_addr: "127.0.0.1:0".parse().expect("address"),
        ..JobConfig::default()
    }
}

/// One record of a workload: its plant (topic and collection index), key and value.
pub struct Ev {
    /// 0, 1, 2: potato, tomato, pepper.
    pub plant: usize,
    /// The image id (the record's key, so an image's events share a partition).
    pub key: i64,
    /// The Image API's JSON.
    pub value: String,
}

/// A LIMS-shaped mix of `n` events over images of `kb` KiB, in LIMS's proportions (its
/// camera job creates, its disease, users and metadata jobs update whole images, a few
/// soft deletes), with partial updates, replays and stale versions besides: 60 % creates,
/// 20 % full updates, 10 % partial updates, 3 % soft deletes, 5 % replays of an earlier
/// event, 2 % an older version after a newer one. Deterministic.
pub fn mixed_events(n: usize, kb: usize) -> Vec<Ev> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let mut images: Vec<(usize, i64, u32, String)> = Vec::new(); // plant, id, version, last
    let mut next_id = [0_i64; 3];
    let at = |v: u32| format!("2024-05-01T12:{:02}:{:02}.{:06}", v / 60 % 60, v % 60, v);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let roll = next(100);
        if images.is_empty() || roll < 60 {
            let plant = out.len() % 3;
            next_id[plant] += 1;
            let id = next_id[plant];
            let value = event_for(id, kb);
            images.push((plant, id, 0, value.clone()));
            out.push(Ev {
                plant,
                key: id,
                value,
            });
            continue;
        }
        let pick = usize::try_from(next(images.len() as u64)).unwrap_or(0);
        let (plant, id, version, last) = images[pick].clone();
        let value = match roll {
            60..80 => {
                let mut full: serde_json::Value =
                    serde_json::from_str(&event_for(id, kb)).expect("json");
                full["updated_at"] = at(version + 1).into();
                full["is_active"] = (version % 2 == 0).into();
                full.to_string()
            }
            80..90 => serde_json::json!({
                "id": id, "disease": "Healthy", "percentage": 0.9,
                "updated_at": at(version + 1),
            })
            .to_string(),
            90..93 => {
                serde_json::json!({"id": id, "is_deleted": true, "updated_at": at(version + 1)})
                    .to_string()
            }
            93..98 => {
                out.push(Ev {
                    plant,
                    key: id,
                    value: last,
                });
                continue;
            }
            _ => {
                // An older version than the stored one: stale.
                let value = serde_json::json!({"id": id, "is_active": false, "updated_at": at(0)})
                    .to_string();
                out.push(Ev {
                    plant,
                    key: id,
                    value,
                });
                continue;
            }
        };
        images[pick] = (plant, id, version + 1, value.clone());
        out.push(Ev {
            plant,
            key: id,
            value,
        });
    }
    out
}

fn event_for(id: i64, kb: usize) -> String {
    event(usize::try_from(id).expect("positive"), kb)
}

/// Produces `events` to their plant's topic, keyed by image; returns once all are acked.
pub async fn produce_events(topics: &[String], events: &[Ev]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "20")
        // Idempotent: records enqueued in order stay in order within each partition,
        // however many batches are in flight.
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    let keys: Vec<String> = events.iter().map(|e| e.key.to_string()).collect();
    // All enqueued at once, in workload order (join_all polls them in order).
    let sends = events.iter().zip(&keys).map(|(e, key)| {
        producer.send(
            FutureRecord::to(&topics[e.plant])
                .key(key)
                .payload(&e.value),
            Duration::from_secs(60),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).expect("produce");
    }
}

/// Produces `(key, value)` events round-robin by key to `topics`; returns once all are acked.
pub async fn produce(topics: &[String], events: &[(usize, String)]) {
    let largest = events.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "20")
        .set(
            "message.max.bytes",
            (largest.max(1_000_000) + 64 * 1024).to_string(),
        )
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
