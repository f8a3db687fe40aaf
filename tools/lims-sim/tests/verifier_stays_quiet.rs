//! A healthy pipeline never shows drift: for ten minutes the LIMS simulator writes its
//! producer DB and publishes events at 100× LIMS's rates (with duplicates, reordered
//! updates and poison records, all of which the stream absorbs), consumer-job streams
//! them, and the verifier (`reconcile --watch` with its production defaults: 30 s settle
//! time, 1,000 documents/s, pages of 200, 10 s between passes) walks both DBs pass after
//! pass. Every complete pass of every plant must report zero drift of every kind.

use std::time::Duration;

use consumer_job::{
    Job, JobConfig, JobMetrics,
    config::EnvConfig,
    verify::{self, Kind, Options, Plant, VerifyMetrics},
};
use leafsync_core::{ImageRepository, PlantType, WritePath};
use leafsync_test_support::{create_topic, kafka_brokers, mongo_client, mongo_uri, unique_name};
use lims_sim::simulator::{self, SimConfig};
use tokio_util::sync::CancellationToken;

/// How long the simulator runs.
const RUN: Duration = Duration::from_secs(600);

/// consumer-job over `topics` into `consumer`, until `shutdown`.
async fn start_job(
    topics: &[String; 3],
    consumer: &str,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), consumer_job::JobError>> {
    let dlq = unique_name("dlq");
    create_topic(&dlq, 1).await;
    let job_config = JobConfig {
        kafka_brokers: kafka_brokers(),
        kafka_group_id: unique_name("group"),
        topics: topics
            .iter()
            .zip(PlantType::ALL)
            .map(|(t, p)| format!("{t}={}", p.collection()))
            .collect::<Vec<_>>()
            .join(","),
        dlq_topic: dlq,
        mongo_uri: mongo_uri(),
        mongo_db: consumer.to_owned(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        ..JobConfig::default()
    };
    let settings = job_config.validate().expect("valid config");
    let job = Job::build(settings, JobMetrics::new()).await.expect("job");
    tokio::spawn(job.run(shutdown.clone()))
}

/// The verifier with its production defaults, producer against consumer, until
/// `shutdown`.
fn start_verifier(
    producer: mongodb::Database,
    consumer: ImageRepository,
    plants: Vec<Plant>,
    metrics: VerifyMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let options = Options {
        page_size: 200,
        max_docs_per_second: 1000,
        settle: Duration::from_secs(30),
        pass_pause: Duration::from_secs(10),
        repair: false,
        max_future_skew: Duration::from_secs(300),
    };
    tokio::spawn(async move {
        verify::watch(&producer, &consumer, &plants, &options, &metrics, &shutdown).await;
    })
}

/// Until `running` ends, every second: each plant's newly completed pass, and any drift
/// it reported. Returns the passes seen per plant and the drift found.
async fn watch_passes(
    plants: &[Plant],
    metrics: &VerifyMetrics,
    running: &tokio::task::JoinHandle<anyhow::Result<simulator::Stats>>,
) -> (Vec<u64>, Vec<String>) {
    let mut seen_passes = vec![0_u64; plants.len()];
    let mut drift = Vec::new();
    while !running.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, plant) in plants.iter().enumerate() {
            let passes = metrics.completed_passes(&plant.label);
            if passes == seen_passes[i] {
                continue;
            }
            seen_passes[i] = passes;
            for kind in Kind::ALL {
                let n = metrics
                    .drift
                    .with_label_values(&[plant.label.as_str(), kind.as_str()])
                    .get();
                if n != 0 {
                    drift.push(format!(
                        "{} pass {passes}: {n} {}",
                        plant.label,
                        kind.as_str()
                    ));
                }
            }
        }
    }
    (seen_passes, drift)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_minute_healthy_run_at_100x_lims_rates_shows_no_drift_in_any_pass() {
    let topics = [
        unique_name("potato"),
        unique_name("tomato"),
        unique_name("pepper"),
    ];
    for t in &topics {
        create_topic(t, 3).await;
    }
    let client = mongo_client().await;
    let producer_db = client.database(&unique_name("producer"));
    let consumer_db = client.database(&unique_name("consumer"));
    let shutdown = CancellationToken::new();
    let job = start_job(&topics, consumer_db.name(), &shutdown).await;
    let plants: Vec<Plant> = PlantType::ALL
        .iter()
        .map(|p| Plant {
            label: p.to_string(),
            collection: leafsync_core::CollectionName::parse(p.collection()).expect("name"),
        })
        .collect();
    let metrics = VerifyMetrics::new();
    let verifier = start_verifier(
        producer_db.clone(),
        ImageRepository::new(client.clone(), consumer_db.name(), WritePath::Auto),
        plants.clone(),
        metrics.clone(),
        shutdown.clone(),
    );

    // 100× LIMS's pace: a camera image every 0.3 s, a disease update every 1 s, users jobs
    // every 3 s, a delete every 7 s.
    let sim = SimConfig {
        brokers: kafka_brokers(),
        topics: topics.clone(),
        speedup: 100.0,
        max_images: None,
        duration: Some(RUN),
        duplicate_rate: 0.2,
        reorder_rate: 0.3,
        poison_rate: 0.1,
        seed: 11,
    };
    let simulation = tokio::spawn({
        let producer = producer_db.clone();
        async move { simulator::run(&sim, &producer, CancellationToken::new()).await }
    });
    let (seen_passes, drift) = watch_passes(&plants, &metrics, &simulation).await;
    let stats = simulation
        .await
        .expect("simulation task")
        .expect("simulation");
    shutdown.cancel();
    job.await.expect("job task").expect("job run");
    verifier.await.expect("verifier task");

    assert!(
        stats.created >= 1000 && stats.updated >= 300 && stats.deleted >= 50,
        "a LIMS-like load at 100x: {stats:?}"
    );
    assert!(
        stats.duplicates > 0 && stats.reordered > 0 && stats.poison > 0,
        "every fault the stream absorbs was injected: {stats:?}"
    );
    assert!(
        seen_passes.iter().all(|&p| p >= 10),
        "passes completed per plant: {seen_passes:?}"
    );
    assert!(drift.is_empty(), "false drift in a healthy run: {drift:?}");
}
