//! Throughput of consumer-job against the DB's own ceiling, printed as figures (not a
//! timed test). Run with `scripts/bench.sh` (starts Apache Kafka + SecantusDB).
//!
//! 1. Ceiling: the same N events, parsed beforehand, upserted through
//!    `ImageRepository::apply` in batches of the job's size into an empty database.
//! 2. Job: the N events pre-produced to three 3-partition topics; the job drains the
//!    backlog into another empty database. Timed from its first consumed record to the
//!    N-th applied image, so the consumer-group join is not counted.
//!
//! Env: `BENCH_EVENTS` (default 3000), `BENCH_IMAGE_KB` raw image size (default 15, so a
//! record is ~30 KB of hex like LIMS's), `BENCH_BATCH` (default 500).

mod common;

use std::time::{Duration, Instant};

use common::{COLLECTIONS, PLANTS, event, fresh_topics, job_config, produce};
use consumer_job::{Job, JobMetrics};
use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{env_or, kafka_brokers, mongo_client, mongo_uri, unique_name};
use tokio_util::sync::CancellationToken;

#[allow(clippy::cast_precision_loss)] // figures for humans
fn report(label: &str, n: usize, bytes: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    println!(
        "{label:<44} {n} events in {secs:6.2} s = {rate:7.0} msg/s, {:6.1} MB/s",
        bytes as f64 / secs / 1e6
    );
    rate
}

struct Setup {
    events: Vec<(usize, String)>,
    bytes: usize,
    batch: usize,
}

/// The same events, parsed beforehand, straight into `ImageRepository::apply`.
async fn ceiling(setup: &Setup) -> f64 {
    let repo = ImageRepository::new(
        mongo_client().await,
        &unique_name("bench_ceiling"),
        WritePath::Auto,
    );
    repo.ensure_indexes(&COLLECTIONS).await.expect("indexes");
    let writes: Vec<Write> = setup
        .events
        .iter()
        .map(|(i, e)| Write {
            collection: COLLECTIONS[i % 3].to_owned(),
            change: ImageChange::from_json_slice(e.as_bytes()).expect("valid event"),
        })
        .collect();
    let started = Instant::now();
    for chunk in writes.chunks(setup.batch) {
        repo.apply(chunk).await.expect("bulk upsert");
    }
    report(
        "ceiling: ImageRepository::apply alone",
        writes.len(),
        setup.bytes,
        started.elapsed(),
    )
}

/// Produces every event to three fresh 3-partition topics; returns the topic names.
async fn produce_backlog(setup: &Setup) -> Vec<String> {
    let topics = fresh_topics(3).await;
    let started = Instant::now();
    produce(&topics, &setup.events).await;
    report(
        "(setup) produce the backlog to Kafka",
        setup.events.len(),
        setup.bytes,
        started.elapsed(),
    );
    topics
}

/// The job drains the backlog; timed from its first consumed record to the last insert.
async fn job(setup: &Setup, topics: &[String]) -> f64 {
    let n = setup.events.len() as u64;
    let config = job_config(topics, setup.batch);
    let metrics = JobMetrics::new();
    let job = Job::build(config, metrics.clone()).await.expect("job");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(job.run(shutdown.clone()));
    let count = |family: &prometheus::IntCounterVec, extra: &[&str]| -> u64 {
        PLANTS
            .iter()
            .map(|p| family.with_label_values(&[&[*p][..], extra].concat()).get())
            .sum()
    };
    while count(&metrics.events_consumed, &[]) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    while count(&metrics.images, &["inserted"]) < n {
        assert!(
            Instant::now() < deadline,
            "job applied too few events in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = report(
        "job: Kafka -> consumer-job -> SecantusDB",
        setup.events.len(),
        setup.bytes,
        started.elapsed(),
    );
    shutdown.cancel();
    handle.await.expect("job task").expect("job run");
    rate
}

#[tokio::main]
async fn main() {
    let n = env_or::<usize>("BENCH_EVENTS", 3000);
    let kb = env_or::<usize>("BENCH_IMAGE_KB", 15);
    let batch = env_or::<usize>("BENCH_BATCH", 500);
    let events: Vec<(usize, String)> = (1..=n).map(|i| (i, event(i / 3 + 1, kb))).collect();
    let bytes: usize = events.iter().map(|(_, e)| e.len()).sum();
    #[allow(clippy::cast_precision_loss)]
    let avg_kb = bytes as f64 / n as f64 / 1024.0;
    println!(
        "leafsync throughput benchmark: {n} events of {avg_kb:.1} KiB (hex of {kb} KiB images), batches of {batch}"
    );
    println!("Mongo {} | Kafka {}", mongo_uri(), kafka_brokers());
    let setup = Setup {
        events,
        bytes,
        batch,
    };
    let ceiling = ceiling(&setup).await;
    let topics = produce_backlog(&setup).await;
    let job_rate = job(&setup, &topics).await;
    println!("ratio job/ceiling: {:.0}%", 100.0 * job_rate / ceiling);
}
