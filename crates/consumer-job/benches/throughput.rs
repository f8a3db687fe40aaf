//! Throughput of consumer-job against neutral ceilings measured in the same run, printed
//! as figures (not a timed test). Run with `scripts/bench.sh throughput` (starts Apache
//! Kafka and SecantusDB).
//!
//! Two workloads, each produced once to fresh topics (3 topics × each partition count of
//! `BENCH_PARTITIONS`): N LIMS-sized **creates**, and N events of a **mixed** LIMS
//! workload (creates, full and partial updates, soft deletes, replays, stale versions:
//! `common::mixed_events`). For each:
//! 1. **Broker ceiling**: a bare rdkafka consumer (fresh group) reads all N; no database.
//! 2. **Neutral database ceilings**, from a client that is not leafsync's code path:
//!    pymongo (`scripts/bench/neutral_writes.py`, in the SecantusDB venv) applies the same
//!    events, decoded to the same BSON beforehand, with the job's write concern
//!    (`w: majority, j: true`) and unique index, in bulks of the job's batch size: the
//!    creates by `insert_many` (the `insert` command), a newer version of each by guarded
//!    upserts through the `update` command, the mixed stream as plain upserts by `id`.
//! 3. **(diagnostic)** leafsync's write path alone (`ImageRepository::apply`): not a
//!    ceiling, it is our own code.
//! 4. **Per-message baseline**: upsert + synchronous commit for each record, as the
//!    reference Python consumer of the LIMS write-up does (`BENCH_PER_MESSAGE_EVENTS`).
//! 5. **The job**, from its first consumed record to the N-th outcome, with where its
//!    time went: writing to MongoDB, committing, and the rest (waiting for records).
//!
//! Env: `BENCH_EVENTS` (3000), `BENCH_IMAGE_KB` raw image size (15, so a record is ~30 KB
//! of hex like LIMS's), `BENCH_BATCH` (the job's default batch bound),
//! `BENCH_PARTITIONS` (`1,3`), `BENCH_PER_MESSAGE_EVENTS` (300).

mod common;

use std::time::{Duration, Instant};

use common::{
    COLLECTIONS, Ev, PLANTS, event, fresh_topics, job_config, mixed_events, produce_events,
};
use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{env_or, kafka_brokers, mongo_client, mongo_uri, unique_name};
use mongodb::{
    bson::{Document, doc},
    options::IndexOptions,
};
use rdkafka::{
    ClientConfig, Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
};
use tokio_util::sync::CancellationToken;

#[allow(clippy::cast_precision_loss)] // figures for humans
fn report(label: &str, n: usize, bytes: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    print_rate(label, n, rate, bytes as f64 / secs / 1e6, secs);
    rate
}

fn print_rate(label: &str, n: usize, rate: f64, mb_per_s: f64, secs: f64) {
    println!("  {label:<60} {n:>5} events in {secs:6.2} s = {rate:7.0} msg/s, {mb_per_s:6.1} MB/s");
}

struct Workload {
    name: &'static str,
    events: Vec<Ev>,
    /// Average record value size.
    avg_bytes: usize,
    batch: usize,
}

impl Workload {
    fn new(name: &'static str, events: Vec<Ev>, batch: usize) -> Self {
        let avg_bytes = events.iter().map(|e| e.value.len()).sum::<usize>() / events.len().max(1);
        Self {
            name,
            events,
            avg_bytes,
            batch,
        }
    }

    fn bytes(&self, n: usize) -> usize {
        self.avg_bytes * n
    }
}

/// A consumer of `topics` in a fresh group, from the beginning, committing by hand only.
fn bare_consumer(topics: &[String]) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique_name("bench_bare"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("bare consumer");
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).expect("subscribe");
    consumer
}

/// Step 1: a bare consumer reads every record; timed from the first record.
async fn broker_ceiling(w: &Workload, topics: &[String]) -> f64 {
    let consumer = bare_consumer(topics);
    let n = w.events.len();
    let _first = consumer.recv().await.expect("first record");
    let started = Instant::now();
    for _ in 1..n {
        consumer.recv().await.expect("record");
    }
    report(
        "broker ceiling: bare rdkafka consumer, no DB",
        n,
        w.bytes(n),
        started.elapsed(),
    )
}

/// What pymongo measured for a workload.
struct Neutral {
    creates: f64,
    updates: f64,
    mixed: f64,
}

/// Step 2, the neutral ceilings: pymongo applies the same events (see the module doc).
fn neutral(w: &Workload) -> Neutral {
    let path = std::env::temp_dir().join(format!("{}.jsonl", unique_name("bench_events")));
    let lines: Vec<String> = w
        .events
        .iter()
        .map(|e| serde_json::json!({"plant": e.plant, "event": e.value}).to_string())
        .collect();
    std::fs::write(&path, lines.join("\n")).expect("events file");
    let python = std::env::var("LEAFSYNC_TEST_SECANTUS_BIN").map_or_else(
        |_| std::path::PathBuf::from("python3"),
        |bin| std::path::Path::new(&bin).with_file_name("python3"),
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench/neutral_writes.py"
    );
    let out = std::process::Command::new(&python)
        .args([
            script,
            &mongo_uri(),
            &path.to_string_lossy(),
            &w.batch.to_string(),
        ])
        .output()
        .expect("the neutral client runs (pymongo, in the SecantusDB venv)");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "neutral_writes.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("neutral_writes.py prints JSON");
    let rate = |k: &str| figures[k].as_f64().expect("a rate");
    let seconds = |k: &str| figures[&format!("{k}_seconds")].as_f64().expect("seconds");
    let client = figures["client"].as_str().unwrap_or("pymongo");
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = |k: &str| (rate(k) * seconds(k)).round() as usize;
    #[allow(clippy::cast_precision_loss)]
    let mb = |k: &str| w.avg_bytes as f64 * rate(k) / 1e6;
    if w.name == "creates" {
        print_rate(
            &format!("neutral: {client}, insert_many (the insert command)"),
            count("creates"),
            rate("creates"),
            mb("creates"),
            seconds("creates"),
        );
        print_rate(
            &format!("neutral: {client}, guarded upserts (the update command)"),
            count("updates"),
            rate("updates"),
            mb("updates"),
            seconds("updates"),
        );
    } else {
        print_rate(
            &format!("neutral: {client}, every event as a plain upsert (update)"),
            count("mixed"),
            rate("mixed"),
            mb("mixed"),
            seconds("mixed"),
        );
    }
    Neutral {
        creates: rate("creates"),
        updates: rate("updates"),
        mixed: rate("mixed"),
    }
}

/// A fresh database with the unique `id` index the job also creates.
async fn fresh_db(prefix: &str) -> (mongodb::Client, String) {
    let client = mongo_client().await;
    let name = unique_name(prefix);
    for c in COLLECTIONS {
        client
            .database(&name)
            .collection::<Document>(c)
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "id": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .await
            .expect("index");
    }
    (client, name)
}

/// Step 3, not a ceiling: the same events through leafsync's own write path
/// (`ImageRepository::apply`, guard filter included), to tell the write path's cost from
/// the pipeline's.
async fn write_path(w: &Workload) -> f64 {
    let (client, db) = fresh_db("bench_write_path").await;
    let repo = ImageRepository::new(client, &db, WritePath::Auto);
    let writes: Vec<Write> = w
        .events
        .iter()
        .map(|e| Write {
            collection: leafsync_core::CollectionName::parse(COLLECTIONS[e.plant])
                .expect("collection"),
            change: ImageChange::from_json_slice(e.value.as_bytes()).expect("valid event"),
        })
        .collect();
    let started = Instant::now();
    for chunk in writes.chunks(w.batch) {
        repo.apply(chunk).await.expect("bulk upsert");
    }
    report(
        "(diagnostic) leafsync's write path alone, no Kafka",
        writes.len(),
        w.bytes(writes.len()),
        started.elapsed(),
    )
}

/// Step 4: one upsert and one synchronous commit per record.
async fn per_message(w: &Workload, topics: &[String], n: usize) -> f64 {
    let consumer = bare_consumer(topics);
    let (client, db) = fresh_db("bench_per_message").await;
    let db = client.database(&db);
    let mut started = None;
    for _ in 0..n {
        let msg = consumer.recv().await.expect("record");
        started.get_or_insert_with(Instant::now);
        let change =
            ImageChange::from_json_slice(msg.payload().expect("value")).expect("valid event");
        let collection = COLLECTIONS[PLANTS
            .iter()
            .position(|p| msg.topic().starts_with(p))
            .expect("plant topic")];
        db.collection::<Document>(collection)
            .update_one(
                doc! { "id": change.set.get("id").cloned().expect("id") },
                doc! { "$set": change.set },
            )
            .upsert(true)
            .await
            .expect("upsert");
        consumer
            .commit_message(&msg, CommitMode::Sync)
            .expect("commit");
    }
    report(
        "per-message: upsert + sync commit per record",
        n,
        w.bytes(n),
        started.expect("records").elapsed(),
    )
}

/// Step 5: the job drains the backlog; timed from its first consumed record to the N-th
/// outcome (every record gets one: inserted, updated, unchanged, stale, collapsed).
async fn job(w: &Workload, config: JobConfig) -> f64 {
    let n = w.events.len() as u64;
    let metrics = JobMetrics::new();
    let settings = config.validate().expect("valid config");
    let job = Job::build(settings, metrics.clone()).await.expect("job");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(job.run(shutdown.clone()));
    let consumed = || -> u64 {
        PLANTS
            .iter()
            .map(|p| metrics.events_consumed.with_label_values(&[p]).get())
            .sum()
    };
    let applied = || -> u64 {
        let text = metrics.render();
        leafsync_test_support::metric_value(&text, "leafsync_job_images_total", &[])
    };
    while consumed() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    while applied() < n {
        assert!(
            Instant::now() < deadline,
            "job applied too few events in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = started.elapsed();
    let rate = report(
        "consumer-job: Kafka -> consumer-job -> SecantusDB",
        w.events.len(),
        w.bytes(w.events.len()),
        wall,
    );
    let batches = metrics.batch_size.get_sample_count();
    #[allow(clippy::cast_precision_loss)]
    let mean = metrics.batch_size.get_sample_sum() / batches.max(1) as f64;
    let writing = metrics.write_duration.get_sample_sum();
    let committing = metrics.commit_duration.get_sample_sum();
    let wall = wall.as_secs_f64();
    println!(
        "  {:<60} {batches} batches, {mean:.0} records on average; of {wall:.2} s: writing to MongoDB {writing:.2} s ({:.0} %), committing {committing:.2} s, the rest {:.2} s",
        "",
        100.0 * writing / wall,
        (wall - writing - committing).max(0.0)
    );
    shutdown.cancel();
    handle.await.expect("job task").expect("job run");
    rate
}

/// The N LIMS-sized creates (image `i / 3 + 1` of plant `i % 3`).
fn creates(n: usize, kb: usize) -> Vec<Ev> {
    (1..=n)
        .map(|i| Ev {
            plant: i % 3,
            key: i64::try_from(i / 3 + 1).expect("small"),
            value: event(i / 3 + 1, kb),
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let n = env_or::<usize>("BENCH_EVENTS", 3000);
    let kb = env_or::<usize>("BENCH_IMAGE_KB", 15);
    let batch = env_or::<usize>("BENCH_BATCH", JobConfig::default().batch_max_messages);
    let per_message_n = env_or::<usize>("BENCH_PER_MESSAGE_EVENTS", 300).min(n);
    let partitions: Vec<i32> = std::env::var("BENCH_PARTITIONS")
        .unwrap_or_else(|_| "1,3".to_owned())
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .expect("BENCH_PARTITIONS: comma-separated integers")
        })
        .collect();
    let workloads = [
        Workload::new("creates", creates(n, kb), batch),
        Workload::new("mixed", mixed_events(n, kb), batch),
    ];
    #[allow(clippy::cast_precision_loss)]
    let avg_kb = workloads[0].avg_bytes as f64 / 1024.0;
    println!(
        "leafsync throughput benchmark: {n} events of {avg_kb:.1} KiB (hex of {kb} KiB images) per workload, bulks of {batch}, w: majority, j: true"
    );
    println!(
        "Mongo {} | Kafka {}",
        leafsync_core::redact::redact_uri(&mongo_uri()),
        kafka_brokers()
    );
    for w in &workloads {
        println!("workload {}:", w.name);
        let neutral = neutral(w);
        let ceiling = if w.name == "creates" {
            neutral.creates
        } else {
            neutral.mixed
        };
        let _ = neutral.updates;
        write_path(w).await;
        for &p in &partitions {
            println!(" 3 topics x {p} partition(s):");
            let topics = fresh_topics(p).await;
            let started = Instant::now();
            produce_events(&topics, &w.events).await;
            report(
                "(setup) produce the backlog",
                n,
                w.bytes(n),
                started.elapsed(),
            );
            let broker = broker_ceiling(w, &topics).await;
            if w.name == "creates" && p == partitions[0] {
                let per_message = per_message(w, &topics, per_message_n).await;
                println!(
                    "  {:<60} (per-message baseline: {per_message:.0} msg/s)",
                    ""
                );
            }
            let job_rate = job(w, job_config(&topics, batch)).await;
            println!(
                "  job = {:.0} % of the neutral ceiling ({ceiling:.0} docs/s, pymongo), {:.0} % of the broker ceiling",
                100.0 * job_rate / ceiling,
                100.0 * job_rate / broker
            );
        }
    }
}
