//! The whole pipeline against real services: the LIMS simulator writes its producer DB
//! and publishes events with duplicates, out-of-order updates and poison records; the
//! consumer-job streams them into a consumer DB; `verify` must then find the two DBs
//! identical, field by field and type by type.

use std::time::Duration;

use consumer_job::{Job, JobConfig, JobMetrics, config::EnvConfig};
use leafsync_test_support::{create_topic, kafka_brokers, mongo_client, mongo_uri, unique_name};
use lims_sim::{
    simulator::{self, SimConfig},
    verify,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_db_verifies_clean_against_the_producer_db_despite_faults() {
    let topics = [
        unique_name("potato"),
        unique_name("tomato"),
        unique_name("pepper"),
    ];
    for t in &topics {
        create_topic(t, 3).await;
    }
    let dlq = unique_name("dlq");
    create_topic(&dlq, 1).await;
    let client = mongo_client().await;
    let producer_db = client.database(&unique_name("producer"));
    let consumer_db = client.database(&unique_name("consumer"));

    let job_config = JobConfig {
        kafka_brokers: kafka_brokers(),
        kafka_group_id: unique_name("group"),
        topics: topics
            .iter()
            .zip(leafsync_core::PlantType::ALL)
            .map(|(t, p)| format!("{t}={}", p.collection()))
            .collect::<Vec<_>>()
            .join(","),
        dlq_topic: dlq,
        mongo_uri: mongo_uri(),
        mongo_db: consumer_db.name().to_owned(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        ..JobConfig::default()
    };
    let metrics = JobMetrics::new();
    let settings = job_config.validate().expect("valid config");
    let job = Job::build(settings, metrics.clone()).await.expect("job");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(job.run(shutdown.clone()));

    // 3000x LIMS's pace: a camera image every 10 ms, a disease update every 33 ms, users
    // jobs every 100 ms, a delete every 233 ms.
    let sim = SimConfig {
        brokers: kafka_brokers(),
        topics: topics.clone(),
        speedup: 3000.0,
        max_images: Some(45),
        duration: None,
        duplicate_rate: 0.2,
        reorder_rate: 0.3,
        poison_rate: 0.1,
        seed: 7,
    };
    let stats = simulator::run(&sim, &producer_db, CancellationToken::new())
        .await
        .expect("simulation");
    assert_eq!(stats.created, 45);
    assert!(stats.updated >= 10 && stats.deleted >= 1, "{stats:?}");
    assert!(
        stats.duplicates > 0 && stats.reordered > 0 && stats.poison > 0,
        "every fault was injected: {stats:?}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let report = loop {
        let report = verify::verify(&producer_db, &consumer_db)
            .await
            .expect("verify");
        if report.is_clean() || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(report.is_clean(), "{report}");
    let stale = metrics.images.with_label_values(&["potato", "stale"]).get()
        + metrics.images.with_label_values(&["tomato", "stale"]).get()
        + metrics.images.with_label_values(&["pepper", "stale"]).get();
    assert!(
        stale >= 1,
        "the out-of-order updates reached the job and were ignored as stale"
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
