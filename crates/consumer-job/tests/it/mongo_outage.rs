//! A MongoDB outage mid-stream: the job's own SecantusDB is killed while events keep
//! coming, then restarted. The job must retry (not skip, not commit past) and end with
//! every image in its final state.

use std::time::Duration;

use crate::common::{
    COLLECTIONS, created, eventually, send_json, wait_for_count, world_with_its_own_mongo,
};
use consumer_job::config::EnvConfig;
use leafsync_core::WritePath;
use serde_json::json;

async fn a_mongo_outage_mid_stream_loses_and_skips_nothing(path: WritePath) {
    let (mut mongo, w) = world_with_its_own_mongo(3).await;
    let mut config = w.config();
    config.mongo_write_path = path;
    let job = crate::common::start_job(config).await;
    let producer = w.producer();
    let potato = &w.plants[0];

    for id in 1..=10 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    wait_for_count(&w.mongo().await, COLLECTIONS[0], 10, 60).await;

    mongo.kill();
    for id in 11..=20 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    for id in 1..=20 {
        let update = json!({"id": id, "disease": "Healthy", "updated_at": "2024-05-01T12:00:00"});
        send_json(&producer, potato, &update).await;
    }
    // The job noticed the outage and is retrying.
    job.wait_metric(
        "leafsync_job_retries_total",
        &[("operation", "mongo")],
        2,
        60,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    mongo.restart().await;

    let db = w.mongo().await;
    wait_for_count(&db, COLLECTIONS[0], 20, 90).await;
    eventually(90, "every image updated", || async {
        let n = db
            .collection::<mongodb::bson::Document>(COLLECTIONS[0])
            .count_documents(mongodb::bson::doc! { "disease": "Healthy" })
            .await
            .map_err(|e| e.to_string())?;
        if n == 20 {
            Ok(())
        } else {
            Err(format!("{n} of 20 updated"))
        }
    })
    .await;
    assert_eq!(
        job.metric("leafsync_job_dead_lettered_total", &[]),
        0,
        "an outage is not a poison message"
    );
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongo_outage_mid_stream_loses_and_skips_nothing_with_bulk_write() {
    a_mongo_outage_mid_stream_loses_and_skips_nothing(WritePath::BulkWrite).await;
}

/// The default path: its `insert` and `update` commands must carry the durable write
/// concern themselves (`run_command` applies none of the client's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongo_outage_mid_stream_loses_and_skips_nothing_with_the_default_path() {
    a_mongo_outage_mid_stream_loses_and_skips_nothing(WritePath::Auto).await;
}

async fn shutdown_during_an_outage_abandons_the_batch_uncommitted_within_the_drain_bound(
    path: WritePath,
) {
    let (mut mongo, w) = world_with_its_own_mongo(3).await;
    let mut config = w.config();
    config.mongo_write_path = path;
    config.drain_timeout_ms = 1_000;
    let job = crate::common::start_job(config.clone()).await;
    let producer = w.producer();
    let pepper = &w.plants[2];

    send_json(&producer, pepper, &created(1, 1)).await;
    wait_for_count(&w.mongo().await, COLLECTIONS[2], 1, 60).await;
    mongo.kill();
    for id in 2..=6 {
        send_json(&producer, pepper, &created(id, 1)).await;
    }
    // The job is stuck retrying the write.
    job.wait_metric(
        "leafsync_job_retries_total",
        &[("operation", "mongo")],
        1,
        60,
    )
    .await;
    let stopping = std::time::Instant::now();
    job.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "shutdown is bounded by the drain timeout (took {:?})",
        stopping.elapsed()
    );

    // Nothing of the abandoned batch was committed: the next run applies all of it.
    mongo.restart().await;
    let again = crate::common::start_job(config).await;
    // Image 1 was written before the crash, journaled, then committed: it must survive
    // the SIGKILL (with an unjournaled write concern it did not).
    wait_for_count(&w.mongo().await, COLLECTIONS[2], 6, 90).await;
    assert!(again.metric("leafsync_job_images_total", &[("outcome", "inserted")]) >= 5);
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_abandons_the_batch_uncommitted_within_the_drain_bound_with_bulk_write()
 {
    shutdown_during_an_outage_abandons_the_batch_uncommitted_within_the_drain_bound(
        WritePath::BulkWrite,
    )
    .await;
}

/// A journaled write survives the kill on the default path too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_abandons_the_batch_uncommitted_within_the_drain_bound_with_the_default_path()
 {
    shutdown_during_an_outage_abandons_the_batch_uncommitted_within_the_drain_bound(
        WritePath::Auto,
    )
    .await;
}

/// A number the base manifests set: `NAME=value` in the job's ConfigMap, or `NAME: value`
/// in its Deployment.
fn manifest_number(file: &str, name: &str) -> u64 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../manifests/base")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("manifest");
    text.lines()
        .map(str::trim)
        .find_map(|l| {
            l.strip_prefix("- ")
                .unwrap_or(l)
                .strip_prefix(name)?
                .trim_start_matches(['=', ':', ' '])
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} in {}", path.display()))
}

/// With the numbers the manifests use, a job stuck retrying a dead MongoDB exits on
/// SIGTERM within its whole shutdown bound, and so before Kubernetes' grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stuck_on_a_dead_database_exits_within_the_grace_period_the_manifests_give() {
    let grace = Duration::from_secs(manifest_number(
        "consumer-job.yaml",
        "terminationGracePeriodSeconds",
    ));
    let (mut mongo, w) = world_with_its_own_mongo(1).await;
    let mut config = w.config();
    config.drain_timeout_ms = manifest_number("kustomization.yaml", "LEAFSYNC_DRAIN_TIMEOUT_MS");
    let bound = config
        .clone()
        .validate()
        .expect("valid config")
        .shutdown_bound();
    assert!(
        bound < grace,
        "{bound:?} must fit in the grace period {grace:?}"
    );

    let mut job = crate::common::JobProcess::spawn(&config);
    let producer = w.producer();
    send_json(&producer, &w.plants[0], &created(1, 1)).await;
    wait_for_count(&w.mongo().await, COLLECTIONS[0], 1, 60).await;
    mongo.kill();
    send_json(&producer, &w.plants[0], &created(2, 1)).await;
    eventually(60, "the job retries the write", || async {
        let n = job
            .metric("leafsync_job_retries_total", &[("operation", "mongo")])
            .await;
        if n >= 1 {
            Ok(())
        } else {
            Err(format!("{n} retries"))
        }
    })
    .await;
    let (took, status) = job.terminate(grace).await;
    eprintln!("exited {took:?} after SIGTERM (bound {bound:?}, grace {grace:?})");
    assert!(status.success(), "exit status {status}");
    assert!(
        took <= bound,
        "shutdown took {took:?}, over its bound {bound:?}"
    );
}
