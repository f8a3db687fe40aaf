//! What `reconcile` costs in memory and time when one side is far denser than the other:
//! `BENCH_CONSUMER_ONLY` (100,000) small images only in the consumer DB and
//! `BENCH_PRODUCER` (1,000) producer images spread over their id range, so every producer
//! page covers a hundred times its size of consumer ids. Run with
//! `scripts/bench.sh reconcile`. Printed, not timed-tested.
//!
//! The release `reconcile` binary (or `BENCH_RECONCILE_BIN`, e.g. an earlier build, to
//! compare) runs as its own process, reporting only (`--dry-run`); its peak RSS (`VmHWM`)
//! is read from `/proc` until it exits. The neutral reference in the same run: the bare
//! driver reading both collections in `id` order, one cursor each with batches of the same
//! page size (the least any walk over the two must read).
//!
//! With `BENCH_WATCH_IMAGES` (e.g. 10000) it measures `reconcile --watch` instead: that
//! many small images in both DBs, identical; one unthrottled pass
//! (`--max-docs-per-second 0`) of the release binary, timed by its own
//! `leafsync_verify_pass_duration_seconds`, against the bare driver's walk of the same
//! two collections, and its peak RSS.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use leafsync_test_support::{env_or, mongo_client, mongo_uri, unique_name};
use mongodb::{
    Collection,
    bson::{Binary, Bson, DateTime, Document, doc, spec::BinarySubtype},
    options::FindOptions,
};

const COLL: &str = "imagecolplantpotato";
const PAGE: u32 = 200;

fn image(id: i64) -> Document {
    doc! {
        "id": id, "camera_id": 1,
        "data": Binary { subtype: BinarySubtype::Generic, bytes: vec![0xab; 64] },
        "gps_coordinates": [48.47, 16.58],
        "created_at": DateTime::from_millis(1_696_779_589_123),
        "updated_at": Bson::Null, "is_active": false, "is_deleted": false,
        "disease": Bson::Null, "percentage": Bson::Null,
    }
}

/// Seeds `coll` with small images of `ids`, under a unique index on `id` (the consumer DB
/// has the job's; a walk by `id` over a producer DB without one scans per page).
async fn seed(coll: &Collection<Document>, ids: impl Iterator<Item = i64>) {
    let index = mongodb::IndexModel::builder()
        .keys(doc! { "id": 1 })
        .options(
            mongodb::options::IndexOptions::builder()
                .unique(true)
                .build(),
        )
        .build();
    coll.create_index(index).await.expect("index on id");
    let ids: Vec<i64> = ids.collect();
    for chunk in ids.chunks(1000) {
        coll.insert_many(chunk.iter().map(|&id| image(id)))
            .await
            .expect("seed");
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Reads both collections in `id` order, one cursor each with batches of a page: the
/// bare driver's fastest read of them (the floor of any walk). Returns the documents read.
async fn bare_walk(producer: &Collection<Document>, consumer: &Collection<Document>) -> u64 {
    let mut read = 0;
    for coll in [producer, consumer] {
        let options = FindOptions::builder()
            .sort(doc! { "id": 1 })
            .batch_size(PAGE)
            .build();
        let mut cursor = coll
            .find(doc! {})
            .with_options(options)
            .await
            .expect("find");
        while cursor.try_next().await.expect("next").is_some() {
            read += 1;
        }
    }
    read
}

/// A float sample of the text exposition (the first whose line holds `name`).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `reconcile --watch` over `images` identical images: one unthrottled pass.
async fn watch(images: i64) {
    let client = mongo_client().await;
    let producer = client.database(&unique_name("bench_producer"));
    let consumer = client.database(&unique_name("bench_consumer"));
    let (p, c) = (
        producer.collection::<Document>(COLL),
        consumer.collection::<Document>(COLL),
    );
    let seeding = Instant::now();
    seed(&p, 1..=images).await;
    seed(&c, 1..=images).await;
    println!(
        "seeded {images} identical images (~300 B each) in each DB in {:.0} s",
        seeding.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let read = bare_walk(&p, &c).await;
    let bare = started.elapsed().as_secs_f64();
    println!(
        "reference, the bare driver reading both collections in id order (a cursor each, batches of {PAGE}): {read} documents in {bare:.2} s"
    );
    let port = leafsync_test_support::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .args([
            "--producer-uri",
            &mongo_uri(),
            "--producer-db",
            producer.name(),
        ])
        .args(["--plant", "potato", "--watch", "--max-docs-per-second", "0"])
        .args([
            "--page-size",
            &PAGE.to_string(),
            "--pass-pause-seconds",
            "3600",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("LEAFSYNC_MONGO_URI", mongo_uri())
        .env("LEAFSYNC_MONGO_DB", consumer.name())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start reconcile --watch");
    let pid = child.id();
    let mut peak = 0;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let pass = loop {
        if let Some(hwm) = status_kib(pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        let text = leafsync_test_support::http_get(addr, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        if sample(&text, "leafsync_verify_last_pass_timestamp_seconds").is_some_and(|t| t > 0.0) {
            break sample(&text, "leafsync_verify_pass_duration_seconds").unwrap_or(0.0);
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no complete pass after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().expect("wait");
    println!(
        "reconcile --watch: one pass in {pass:.2} s ({:.2} x the bare walk's time), {status} on SIGTERM",
        pass / bare
    );
    println!(
        "reconcile --watch peak RSS: {} MiB{}",
        peak / 1024,
        if peak <= 64 * 1024 {
            ""
        } else {
            " (over 64 MiB)"
        }
    );
    let _ = client.database(producer.name()).drop().await;
    let _ = client.database(consumer.name()).drop().await;
}

#[tokio::main]
async fn main() {
    if let Ok(images) = std::env::var("BENCH_WATCH_IMAGES") {
        watch(images.parse().expect("BENCH_WATCH_IMAGES is a number")).await;
        return;
    }
    let consumer_only = env_or::<i64>("BENCH_CONSUMER_ONLY", 100_000);
    let producer_n = env_or::<i64>("BENCH_PRODUCER", 1_000);
    let client = mongo_client().await;
    let producer = client.database(&unique_name("bench_producer"));
    let consumer = client.database(&unique_name("bench_consumer"));
    let (p, c) = (
        producer.collection::<Document>(COLL),
        consumer.collection::<Document>(COLL),
    );
    // Producer ids spread over the whole range; the consumer holds every other id.
    let step = (consumer_only + producer_n) / producer_n;
    let producer_ids: Vec<i64> = (0..producer_n).map(|i| 1 + i * step).collect();
    let seeding = Instant::now();
    seed(&p, producer_ids.iter().copied()).await;
    seed(
        &c,
        (1..=consumer_only + producer_n).filter(|id| (id - 1) % step != 0),
    )
    .await;
    println!(
        "seeded {producer_n} producer images and {} consumer-only images (~300 B each) in {:.0} s",
        c.estimated_document_count().await.expect("count"),
        seeding.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let read = bare_walk(&p, &c).await;
    let bare = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let bare_rate = read as f64 / bare;
    println!(
        "reference, the bare driver reading both collections in id order (a cursor each, batches of {PAGE}): {read} documents in {bare:.1} s ({bare_rate:.0} docs/s)"
    );

    let binary = std::env::var("BENCH_RECONCILE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_reconcile").to_owned());
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args([
            "--producer-uri",
            &mongo_uri(),
            "--producer-db",
            producer.name(),
        ])
        .args([
            "--plant",
            "potato",
            "--dry-run",
            "--max-per-second",
            "1000000",
        ])
        .args(["--page-size", &PAGE.to_string()])
        .env("LEAFSYNC_MONGO_URI", mongo_uri())
        .env("LEAFSYNC_MONGO_DB", consumer.name())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start reconcile");
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(hwm) = status_kib(pid, "VmHWM:") {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "reconcile still runs after 900 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed().as_secs_f64();
    let mut summary = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut summary);
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = (consumer_only + producer_n) as f64 / took;
    println!(
        "{binary}: exit {status}, {took:.1} s ({rate:.0} images/s, {:.0} % of the bare walk's rate)",
        100.0 * rate / bare_rate
    );
    println!(
        "reconcile peak RSS: {} MiB (≤ 64 MiB wanted){}",
        peak / 1024,
        if peak <= 64 * 1024 { "" } else { ": OVER" }
    );
    print!("{summary}");
    let _ = client.database(producer.name()).drop().await;
    let _ = client.database(consumer.name()).drop().await;
}
