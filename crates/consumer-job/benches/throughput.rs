//! Throughput of consumer-job against neutral ceilings measured in the same run, printed
//! as figures (not a timed test). Run with `scripts/bench.sh throughput` (starts Apache Kafka and
//! SecantusDB).
//!
//! For each partition count in `BENCH_PARTITIONS`, the same N LIMS-sized creates are
//! produced once to three fresh topics, then drained four ways:
//! 1. **Broker ceiling**: a bare rdkafka consumer (fresh group) reads all N; no database.
//! 2. **Database ceiling**: the bare MongoDB driver upserts the same documents (parsed
//!    beforehand, not timed) with a plain `{id}` filter, in bulks of the job's batch size,
//!    with the job's write concern (`w: majority, j: true`) and a unique index on `id`.
//!    None of leafsync's code is on this path.
//!    The same documents as plain bulk inserts are printed too: the least a create costs.
//! 3. **Per-message baseline**: upsert + synchronous commit for each record, as the
//!    reference Python consumer of the LIMS write-up does (`BENCH_PER_MESSAGE_EVENTS`).
//! 4. **The job**, from its first consumed record to the N-th applied image (the group
//!    join is not counted).
//!
//! The job's rate is printed as a share of min(broker, database).
//!
//! Env: `BENCH_EVENTS` (3000), `BENCH_IMAGE_KB` raw image size (15, so a record is ~30 KB
//! of hex like LIMS's), `BENCH_BATCH` (the job's default batch bound),
//! `BENCH_PARTITIONS` (`1,3`), `BENCH_PER_MESSAGE_EVENTS` (300).

mod common;

use std::time::{Duration, Instant};

use common::{COLLECTIONS, PLANTS, event, fresh_topics, job_config, produce};
use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{env_or, kafka_brokers, mongo_client, mongo_uri, unique_name};
use mongodb::{
    Namespace,
    bson::{Document, doc},
    options::{IndexOptions, InsertOneModel, UpdateOneModel, WriteModel},
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
    println!(
        "  {label:<52} {n:>5} events in {secs:6.2} s = {rate:7.0} msg/s, {:6.1} MB/s",
        bytes as f64 / secs / 1e6
    );
    rate
}

struct Setup {
    events: Vec<(usize, String)>,
    /// Average record value size.
    avg_bytes: usize,
    batch: usize,
}

impl Setup {
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

/// 1. A bare consumer reads every record; timed from the first record.
async fn broker_ceiling(setup: &Setup, topics: &[String]) -> f64 {
    let consumer = bare_consumer(topics);
    let n = setup.events.len();
    let _first = consumer.recv().await.expect("first record");
    let started = Instant::now();
    for _ in 1..n {
        consumer.recv().await.expect("record");
    }
    report(
        "broker ceiling: bare rdkafka consumer, no DB",
        n,
        setup.bytes(n),
        started.elapsed(),
    )
}

/// The documents the job would `$set`, parsed once up front (not timed).
fn documents(setup: &Setup) -> Vec<(usize, Document)> {
    setup
        .events
        .iter()
        .map(|(i, e)| {
            let change = ImageChange::from_json_slice(e.as_bytes()).expect("valid event");
            (*i % 3, change.set)
        })
        .collect()
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

/// The bare driver writing the same documents in bulks of the job's batch size, each as
/// `model` makes it; no leafsync code on the path.
async fn bare_driver(
    setup: &Setup,
    label: &str,
    model: impl Fn(Namespace, &Document) -> WriteModel,
) -> f64 {
    let docs = documents(setup);
    let (client, db) = fresh_db("bench_bare").await;
    let started = Instant::now();
    for chunk in docs.chunks(setup.batch) {
        let models = chunk
            .iter()
            .map(|(c, d)| model(Namespace::new(&db, COLLECTIONS[*c]), d));
        client
            .bulk_write(models)
            .ordered(false)
            .await
            .expect("bulk write");
    }
    report(
        label,
        docs.len(),
        setup.bytes(docs.len()),
        started.elapsed(),
    )
}

/// 2. The database's ceiling: bulk upserts with a plain `{id}` filter.
async fn db_ceiling(setup: &Setup) -> f64 {
    bare_driver(
        setup,
        "database ceiling: bare driver bulk upserts by {id}",
        |ns, d| {
            UpdateOneModel::builder()
                .namespace(ns)
                .filter(doc! { "id": d.get("id").cloned().expect("id") })
                .update(doc! { "$set": d.clone() })
                .upsert(true)
                .build()
                .into()
        },
    )
    .await
}

/// 2b. Bulk inserts of the same documents: what a create costs at the least (the job
/// sends creates as inserts first, so this is its true ceiling for creates).
async fn insert_ceiling(setup: &Setup) -> f64 {
    bare_driver(
        setup,
        "database, creates only: bare driver bulk inserts",
        |ns, d| {
            InsertOneModel::builder()
                .namespace(ns)
                .document(d.clone())
                .build()
                .into()
        },
    )
    .await
}

/// Not a ceiling: the same documents through leafsync's own write path
/// (`ImageRepository::apply`, guard filter included), to tell the write path's cost from
/// the pipeline's.
async fn write_path(setup: &Setup) -> f64 {
    let (client, db) = fresh_db("bench_write_path").await;
    let repo = ImageRepository::new(client, &db, WritePath::Auto);
    let writes: Vec<Write> = setup
        .events
        .iter()
        .map(|(i, e)| Write {
            collection: leafsync_core::CollectionName::parse(COLLECTIONS[i % 3])
                .expect("collection"),
            change: ImageChange::from_json_slice(e.as_bytes()).expect("valid event"),
        })
        .collect();
    let started = Instant::now();
    for chunk in writes.chunks(setup.batch) {
        repo.apply(chunk).await.expect("bulk upsert");
    }
    report(
        "(diagnostic) leafsync's write path alone",
        writes.len(),
        setup.bytes(writes.len()),
        started.elapsed(),
    )
}

/// 3. One upsert and one synchronous commit per record.
async fn per_message(setup: &Setup, topics: &[String], n: usize) -> f64 {
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
        setup.bytes(n),
        started.expect("records").elapsed(),
    )
}

/// 4. The job drains the backlog; timed from its first consumed record to the last insert.
async fn job(setup: &Setup, config: JobConfig) -> f64 {
    let n = setup.events.len() as u64;
    let metrics = JobMetrics::new();
    let settings = config.validate().expect("valid config");
    let job = Job::build(settings, metrics.clone()).await.expect("job");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(job.run(shutdown.clone()));
    let count = |family: &prometheus::IntCounterVec, extra: &[&str]| -> u64 {
        PLANTS
            .iter()
            .map(|p| family.with_label_values(&[&[*p][..], extra].concat()).get())
            .sum()
    };
    while count(&metrics.events_consumed, &[]) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    while count(&metrics.images, &["inserted"]) < n {
        assert!(
            Instant::now() < deadline,
            "job applied too few events in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = report(
        "consumer-job: Kafka -> consumer-job -> SecantusDB",
        setup.events.len(),
        setup.bytes(setup.events.len()),
        started.elapsed(),
    );
    let batches = metrics.batch_size.get_sample_count();
    #[allow(clippy::cast_precision_loss)]
    let mean = metrics.batch_size.get_sample_sum() / batches.max(1) as f64;
    println!(
        "  {:<52} {batches} batches, {mean:.0} records on average, writing {:.2} s of the {:.2} s",
        "",
        metrics.batch_duration.get_sample_sum(),
        started.elapsed().as_secs_f64()
    );
    shutdown.cancel();
    handle.await.expect("job task").expect("job run");
    rate
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
    let events: Vec<(usize, String)> = (1..=n).map(|i| (i, event(i / 3 + 1, kb))).collect();
    let avg_bytes = events.iter().map(|(_, e)| e.len()).sum::<usize>() / n;
    #[allow(clippy::cast_precision_loss)]
    let avg_kb = avg_bytes as f64 / 1024.0;
    println!(
        "leafsync throughput benchmark: {n} events of {avg_kb:.1} KiB (hex of {kb} KiB images), DB bulks of {batch}"
    );
    println!(
        "Mongo {} | Kafka {}",
        leafsync_core::redact::redact_uri(&mongo_uri()),
        kafka_brokers()
    );
    let setup = Setup {
        events,
        avg_bytes,
        batch,
    };
    for p in partitions {
        println!("3 topics x {p} partition(s):");
        let topics = fresh_topics(p).await;
        let started = Instant::now();
        produce(&topics, &setup.events).await;
        report(
            "(setup) produce the backlog",
            n,
            setup.bytes(n),
            started.elapsed(),
        );
        let broker = broker_ceiling(&setup, &topics).await;
        let db = db_ceiling(&setup).await;
        let inserts = insert_ceiling(&setup).await;
        let per_message = per_message(&setup, &topics, per_message_n).await;
        write_path(&setup).await;
        let job_rate = job(&setup, job_config(&topics, batch)).await;
        let ceiling = broker.min(db);
        println!(
            "  job = {:.0}% of min(broker, database upserts) = {ceiling:.0} msg/s; {:.0}% of min(broker, database inserts); {:.1}x the per-message baseline ({per_message:.0} msg/s)",
            100.0 * job_rate / ceiling,
            100.0 * job_rate / broker.min(inserts),
            job_rate / per_message
        );
    }
}
