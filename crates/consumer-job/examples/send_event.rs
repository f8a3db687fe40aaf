//! Sends LIMS events to a topic: one JSON object per line on stdin, each keyed by its
//! `id` (so an image's events share a partition, as the Image API's do). A dev tool for
//! trying the local pipeline by hand.
//!
//! `echo '{"id": 1, "camera_id": 1}' | cargo run -q -p consumer-job --example send_event -- potato`
//! Env: `LEAFSYNC_KAFKA_BROKERS` (default 127.0.0.1:9092).

use std::{io::BufRead, time::Duration};

use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let topic = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: send_event TOPIC < events.jsonl"))?;
    let brokers =
        std::env::var("LEAFSYNC_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "15000")
        .create()?;
    let mut sent = 0;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let key = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("id").map(ToString::to_string))
            .unwrap_or_default();
        let delivery = producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&line),
                Duration::from_secs(15),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("sending to {topic} on {brokers}: {e}"))?;
        sent += 1;
        eprintln!(
            "sent to {topic}[{}]@{} (key {key})",
            delivery.partition, delivery.offset
        );
    }
    eprintln!("{sent} event(s) sent");
    Ok(())
}
