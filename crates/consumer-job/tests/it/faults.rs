//! Kafka faults the real broker cannot be made to produce on demand, injected with
//! librdkafka's in-process mock cluster (real Kafka protocol over TCP on 127.0.0.1):
//! commit errors, brokers going down and up, partition leaders moving, the group
//! coordinator disappearing. MongoDB is the real SecantusDB. In every case the final
//! consumer DB must hold every image in its final state: nothing lost, nothing skipped.

use std::{ops::RangeInclusive, time::Duration};

use crate::common::{COLLECTIONS, RunningJob, World, created, eventually, send_json};
use leafsync_test_support::mongo_uri;
use mongodb::bson::{Document, doc};
use rdkafka::{
    mocking::{MockCluster, MockCoordinator},
    producer::{DefaultProducerContext, FutureProducer},
    types::{RDKafkaApiKey, RDKafkaRespErr},
};
use serde_json::json;

const PARTITIONS: i32 = 3;

fn world(cluster: &MockCluster<'static, DefaultProducerContext>) -> World {
    let world = World::new(cluster.bootstrap_servers(), mongo_uri());
    for topic in &world.plants {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .expect("mock topic");
    }
    cluster.create_topic(&world.dlq, 1, 1).expect("mock topic");
    world
}

/// Every image in `ids` is created, then updated (`is_active: true`, versioned).
async fn produce(w: &World, producer: &FutureProducer, ids: RangeInclusive<i64>) {
    for id in ids {
        let topic = &w.plants[usize::try_from(id % 3).expect("small index")];
        send_json(producer, topic, &created(id, 1)).await;
        let update = json!({"id": id, "is_active": true, "updated_at": "2024-05-01T12:00:00"});
        send_json(producer, topic, &update).await;
    }
}

/// Waits until images `1..=n` are all present and all in their final state.
async fn assert_final_state(w: &World, n: i64) {
    let db = w.mongo().await;
    eventually(
        120,
        &format!("all {n} images present and updated"),
        || async {
            let mut state = Vec::new();
            let mut done = true;
            for c in COLLECTIONS {
                let coll = db.collection::<Document>(c);
                let all = coll
                    .count_documents(doc! {})
                    .await
                    .map_err(|e| e.to_string())?;
                let fin = coll
                    .count_documents(doc! { "is_active": true })
                    .await
                    .map_err(|e| e.to_string())?;
                state.push(format!("{c}: {fin}/{all}"));
                done &= all == fin;
            }
            let total: u64 = db_total(&db).await?;
            if done && total == u64::try_from(n).expect("positive") {
                Ok(())
            } else {
                Err(format!("{total} images; {}", state.join(", ")))
            }
        },
    )
    .await;
}

async fn db_total(db: &mongodb::Database) -> Result<u64, String> {
    let mut total = 0;
    for c in COLLECTIONS {
        total += db
            .collection::<Document>(c)
            .count_documents(doc! {})
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(total)
}

async fn wait_consumed(job: &RunningJob, n: u64) {
    job.wait_metric("leafsync_job_events_consumed_total", &[], n, 120)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_commit_errors_are_retried_and_lose_nothing() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let w = world(&cluster);
    let job = w.start().await;
    let producer = w.producer();

    produce(&w, &producer, 1..=30).await;
    wait_consumed(&job, 60).await;
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 8],
    );
    produce(&w, &producer, 31..=60).await;
    assert_final_state(&w, 60).await;
    // Commits run beside the next write, so the DB can show the last images before the
    // commit that meets the injected errors has answered: wait for it.
    job.wait_metric("leafsync_job_commits_total", &[("result", "error")], 1, 30)
        .await;
    assert!(
        job.metric("leafsync_job_commits_total", &[("result", "error")]) >= 1,
        "the injected commit errors were seen (and retried)"
    );
    job.stop().await;

    // What was committed through the errors is what a restart resumes from: every
    // record is either committed or replayed, and the replay changes nothing.
    let again = w.start().await;
    produce(&w, &producer, 61..=63).await;
    assert_final_state(&w, 63).await;
    // The outcome is counted just after the write the DB already shows: wait for it.
    let updated = [("outcome", "updated")];
    again
        .wait_metric("leafsync_job_images_total", &updated, 3, 30)
        .await;
    assert_eq!(again.metric("leafsync_job_images_total", &updated), 3);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_going_down_and_leaders_moving_lose_nothing() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let w = world(&cluster);
    let job = w.start().await;
    let producer = w.producer();

    produce(&w, &producer, 1..=20).await;
    wait_consumed(&job, 40).await;
    for topic in &w.plants {
        for p in 0..PARTITIONS {
            cluster
                .partition_leader(topic, p, Some(1 + (p + 1) % 3))
                .expect("move leader");
        }
    }
    produce(&w, &producer, 21..=40).await;
    cluster.broker_down(2).expect("broker down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_up(2).expect("broker up");
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
    );
    produce(&w, &producer, 41..=60).await;
    assert_final_state(&w, 60).await;
    job.stop().await;
}

/// Makes broker 3 the group's coordinator and nothing else: every partition leader lives
/// elsewhere, so what happens to broker 3 happens to the coordinator alone.
fn coordinator_alone_on_broker_3(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    w: &World,
) {
    cluster
        .coordinator(MockCoordinator::Group(w.group.clone()), 3)
        .expect("pin the coordinator");
    for topic in &w.plants {
        for p in 0..PARTITIONS {
            cluster
                .partition_leader(topic, p, Some(1 + p % 2))
                .expect("move leader");
        }
    }
    cluster
        .partition_leader(&w.dlq, 0, Some(1))
        .expect("move leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_coordinator_outage_loses_nothing() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let w = world(&cluster);
    coordinator_alone_on_broker_3(&cluster, &w);
    let job = w.start().await;
    let producer = w.producer();

    produce(&w, &producer, 1..=20).await;
    wait_consumed(&job, 40).await;
    cluster.broker_down(3).expect("coordinator down");
    produce(&w, &producer, 21..=40).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(3).expect("coordinator up");
    produce(&w, &producer, 41..=60).await;
    assert_final_state(&w, 60).await;
    job.stop().await;
}

/// A group coordinator that answers in 20 s: the commit in flight at shutdown is raced
/// against the drain bound, and the final commit and the close have bounds of their own,
/// so the job stops within its shutdown bound however slow the coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_coordinator_cannot_stretch_shutdown_past_its_bound() {
    use consumer_job::config::EnvConfig;
    let cluster = MockCluster::new(3).expect("mock cluster");
    let w = world(&cluster);
    coordinator_alone_on_broker_3(&cluster, &w);
    let config = w.config();
    // In process: no runtime to wait for at the end.
    let bound = config
        .clone()
        .validate()
        .expect("valid")
        .shutdown_bound()
        .saturating_sub(consumer_job::config::EXIT_BOUND);
    let job = crate::common::start_job(config).await;
    let producer = w.producer();
    produce(&w, &producer, 1..=10).await;
    wait_consumed(&job, 20).await;
    cluster
        .broker_round_trip_time(3, Duration::from_secs(20))
        .expect("a slow coordinator");
    produce(&w, &producer, 11..=20).await;
    wait_consumed(&job, 40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    job.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), job.handle).await;
    let took = asked.elapsed();
    stopped
        .expect("the job stops")
        .expect("no panic")
        .expect("clean exit");
    eprintln!("stopped {took:?} after the signal (bound {bound:?})");
    // The mock cluster and the producer wait for the slow broker when they are dropped.
    cluster
        .broker_round_trip_time(3, Duration::ZERO)
        .expect("a fast coordinator again");
    drop(producer);
    assert!(
        took <= bound + Duration::from_secs(1),
        "{took:?} past the bound {bound:?}"
    );
}
