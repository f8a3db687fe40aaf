//! What happens when LIMS's event rate rises: an open-loop load at fixed rates against a
//! running job, printed as figures (not a timed test). Run with `scripts/bench.sh rate`.
//!
//! For each rate, fresh topics (3 partitions each) and a fresh database; `BENCH_REPLICAS`
//! jobs join one group, own their partitions and have had one fetch wait to settle before
//! the clock starts; the producer is connected and knows the topics by then too. Event `k` is due
//! at `start + k / rate` (sent late if the producer falls behind, but timed from when it
//! was due, so a slow producer cannot hide queueing); it is applied when the jobs' count
//! of inserted images reaches `k + 1`. Latency = applied − due, per event; backlog = due
//! − applied, sampled every 5 ms.
//!
//! Env: `BENCH_RATES` (events/s, default `5,50,150,300,450`: 100× to 9000× LIMS's
//! ~0.05/s), `BENCH_STEP_SECONDS` (20), `BENCH_REPLICAS` (1), `BENCH_IMAGE_KB` (15),
//! `BENCH_FETCH_WAIT_MS` (the job's `LEAFSYNC_KAFKA_FETCH_WAIT_MAX_MS`, default 500; Kafka
//! answers a fetch as soon as records arrive, so it should not move the latency).

mod common;

use std::time::{Duration, Instant};

use common::{PLANTS, event, fresh_topics, job_config};
use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_test_support::{env_or, kafka_brokers, mongo_uri, percentile};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord, Producer},
};
use tokio_util::sync::CancellationToken;

struct Jobs {
    metrics: Vec<JobMetrics>,
    shutdown: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<Result<(), consumer_job::JobError>>>,
}

impl Jobs {
    async fn start(topics: &[String], replicas: usize, fetch_wait_ms: u32) -> Self {
        let mut config = job_config(topics, 500);
        config.kafka_fetch_wait_max_ms = fetch_wait_ms;
        let shutdown = CancellationToken::new();
        let mut metrics = Vec::new();
        let mut handles = Vec::new();
        for _ in 0..replicas {
            let m = JobMetrics::new();
            let settings = config.clone().validate().expect("valid config");
            let job = Job::build(settings, m.clone()).await.expect("job");
            handles.push(tokio::spawn(job.run(shutdown.clone())));
            metrics.push(m);
        }
        let jobs = Self {
            metrics,
            shutdown,
            handles,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while jobs.partitions() < 9
            || jobs
                .metrics
                .iter()
                .any(|m| m.assigned_partitions.get() == 0)
        {
            assert!(
                Instant::now() < deadline,
                "the group did not settle in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Steady state before the clock: a partition assigned while a fetch was already
        // waiting at the broker joins the next fetch, up to `fetch.wait.max.ms` later.
        tokio::time::sleep(Duration::from_millis(u64::from(fetch_wait_ms) + 500)).await;
        jobs
    }

    fn partitions(&self) -> i64 {
        self.metrics
            .iter()
            .map(|m| m.assigned_partitions.get())
            .sum()
    }

    fn inserted(&self) -> u64 {
        self.metrics
            .iter()
            .flat_map(|m| PLANTS.map(|p| m.images.with_label_values(&[p, "inserted"]).get()))
            .sum()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            h.await.expect("job task").expect("job run");
        }
    }
}

struct Step {
    events: usize,
    latencies: Vec<Duration>,
    max_backlog: usize,
    last_applied: Duration,
}

/// Sends `n` events at `rate`/s (open loop) while watching the jobs apply them.
async fn step(topics: &[String], jobs: &Jobs, rate: f64, n: usize, kb: usize) -> Step {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("message.timeout.ms", "120000")
        .set("linger.ms", "1")
        .create()
        .expect("producer");
    let due = move |k: usize| {
        #[allow(clippy::cast_precision_loss)]
        Duration::from_secs_f64(k as f64 / rate)
    };
    let payloads: Vec<String> = (0..n).map(|k| event(k + 1, kb)).collect();
    // A warm producer, as the Image API's long-running one is: connected, with the
    // topics' metadata, before the clock starts (else the first events time its start-up).
    tokio::task::block_in_place(|| {
        for topic in topics {
            producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("topic metadata");
        }
    });
    let start = Instant::now();
    let sender = {
        let topics = topics.to_vec();
        tokio::spawn(async move {
            let mut deliveries = Vec::with_capacity(n);
            for (k, payload) in payloads.iter().enumerate() {
                tokio::time::sleep_until((start + due(k)).into()).await;
                let key = (k + 1).to_string();
                let record = FutureRecord::to(&topics[k % 3]).key(&key).payload(payload);
                deliveries.push(
                    producer
                        .send_result(record)
                        .map_err(|(e, _)| e)
                        .expect("enqueue"),
                );
            }
            for d in deliveries {
                d.await
                    .expect("delivery")
                    .map_err(|(e, _)| e)
                    .expect("produced");
            }
        })
    };
    let mut applied_at = Vec::with_capacity(n);
    let mut max_backlog = 0;
    let deadline = start + due(n) + Duration::from_secs(600);
    while applied_at.len() < n {
        assert!(
            Instant::now() < deadline,
            "events not applied 600 s after the last was due"
        );
        let now = start.elapsed();
        let inserted = usize::try_from(jobs.inserted())
            .unwrap_or(usize::MAX)
            .min(n);
        while applied_at.len() < inserted {
            applied_at.push(now);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let due_so_far = ((now.as_secs_f64() * rate).floor() as usize + 1).min(n);
        max_backlog = max_backlog.max(due_so_far.saturating_sub(inserted));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sender.await.expect("sender");
    let latencies = applied_at
        .iter()
        .enumerate()
        .map(|(k, at)| at.saturating_sub(due(k)))
        .collect();
    Step {
        events: n,
        latencies,
        max_backlog,
        last_applied: *applied_at.last().unwrap_or(&Duration::ZERO),
    }
}

/// `percentile` in milliseconds.
fn ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "5,50,150,300,450".to_owned())
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("BENCH_RATES: comma-separated events/s")
        })
        .collect();
    let seconds = env_or::<usize>("BENCH_STEP_SECONDS", 20);
    let replicas = env_or::<usize>("BENCH_REPLICAS", 1);
    let kb = env_or::<usize>("BENCH_IMAGE_KB", 15);
    let fetch_wait_ms: u32 = std::env::var("BENCH_FETCH_WAIT_MS").map_or_else(
        |_| JobConfig::default().kafka_fetch_wait_max_ms,
        |ms| ms.parse().expect("BENCH_FETCH_WAIT_MS: ms"),
    );
    println!(
        "leafsync rate benchmark: {seconds} s per rate, {replicas} job replica(s), 3 topics x 3 partitions, {kb} KiB images (~{} KiB events), fetch.wait.max.ms {}",
        event(1, kb).len() / 1024,
        fetch_wait_ms
    );
    println!(
        "Mongo {} | Kafka {}",
        leafsync_core::redact::redact_uri(&mongo_uri()),
        kafka_brokers()
    );
    println!(
        "{:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>11} {:>10}",
        "events/s", "x LIMS", "events", "p50 ms", "p99 ms", "max ms", "max backlog", "applied/s"
    );
    for rate in rates {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let n = ((rate * seconds as f64).round() as usize).max(1);
        let topics = fresh_topics(3).await;
        let jobs = Jobs::start(&topics, replicas, fetch_wait_ms).await;
        let mut s = step(&topics, &jobs, rate, n, kb).await;
        jobs.stop().await;
        s.latencies.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let applied_rate = s.events as f64 / s.last_applied.as_secs_f64();
        println!(
            "{rate:>8.0} {:>8.0}x {:>7} {:>10.1} {:>10.1} {:>10.1} {:>11} {:>10.0}",
            rate / 0.05,
            s.events,
            ms(&s.latencies, 0.50),
            ms(&s.latencies, 0.99),
            ms(&s.latencies, 1.0),
            s.max_backlog,
            applied_rate,
        );
    }
}
