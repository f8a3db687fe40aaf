//! Held, not blind: a job that cannot write (MongoDB down or refusing, a write concern the
//! server cannot meet, an index it cannot build, an open dead-letter breaker) keeps its
//! place in the group and its lag metric alive, says why on `/ready` and in
//! `leafsync_job_stalled`, dead-letters nothing for it, and goes on by itself once the
//! cause is gone. Real job processes, real Kafka, SecantusDB (behind a wire proxy where a
//! refusal must be staged).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::common::{
    COLLECTIONS, JobProcess, World, created, eventually, group_members, send, send_json, topic_end,
    wait_committed_to_end, wait_for_count, world_with_its_own_mongo,
};
use leafsync_test_support::wire::{Rewrite, command_error, is_write, mongo_proxy};
use mongodb::bson::{Document, doc};

/// Waits until `/ready` answers `status` with a body containing `text`.
async fn ready_is(job: &JobProcess, status: u16, text: &str, secs: u64) {
    eventually(secs, &format!("/ready {status} ({text})"), || async {
        let (got, body) = job.get("/ready").await;
        if got == status && body.contains(text) {
            Ok(())
        } else {
            Err(format!("{got} {body}"))
        }
    })
    .await;
}

async fn metric_is(job: &JobProcess, name: &str, labels: &[(&str, &str)], n: u64, secs: u64) {
    eventually(secs, &format!("{name}{labels:?} = {n}"), || async {
        let got = job.metric(name, labels).await;
        if got == n {
            Ok(())
        } else {
            Err(got.to_string())
        }
    })
    .await;
}

/// MongoDB down for longer than `max.poll.interval.ms`: the job pauses its partitions
/// and polls on, so it stays a member and its lag metric follows what is produced; when
/// MongoDB returns, every event lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_by_an_outage_longer_than_the_poll_interval_keeps_its_group_and_its_lag_follows()
{
    let (mut mongo, w) = world_with_its_own_mongo(1).await;
    let mut config = w.config();
    config.kafka_max_poll_interval_ms = 7_000;
    config.batch_max_messages = 5;
    let job = JobProcess::spawn(&config);
    let producer = w.producer();
    let potato = &w.plants[0];
    for id in 1..=10 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    wait_for_count(&w.mongo().await, COLLECTIONS[0], 10, 60).await;

    mongo.kill();
    for id in 11..=40 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    metric_is(
        &job,
        "leafsync_job_stalled",
        &[("reason", "mongo-unavailable")],
        1,
        60,
    )
    .await;
    ready_is(&job, 503, "mongo-unavailable", 10).await;
    // Past the poll interval, twice over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    for id in 41..=60 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (members, state) = group_members(&w.brokers, &w.group);
    assert_eq!(members, 1, "still a member after 16 s held (group {state})");
    eventually(30, "the lag metric follows new events", || async {
        let lag = job.metric("leafsync_job_consumer_lag", &[]).await;
        if lag >= 50 {
            Ok(())
        } else {
            Err(format!("lag {lag}"))
        }
    })
    .await;

    mongo.restart().await;
    wait_for_count(&w.mongo().await, COLLECTIONS[0], 60, 90).await;
    wait_committed_to_end(&w.brokers, &w.group, &w.plants[..1], 60).await;
    ready_is(&job, 200, "ready", 30).await;
    assert_eq!(job.metric("leafsync_job_dead_lettered_total", &[]).await, 0);
    job.stop().await;
}

/// An open breaker is kept in the consumer DB: three restarts find it open and hold at
/// once, so the dead-letter topic grows by no more than the probes (none here), not by a
/// window each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_holds_across_restarts_and_dead_letters_no_more_than_its_probes() {
    let w = World::with_topics(1).await;
    let mut config = w.config();
    config.dlq_breaker_probe_interval_ms = 3_600_000;
    let mut job = JobProcess::spawn(&config);
    let producer = w.producer();
    let potato = &w.plants[0];
    send_json(&producer, potato, &created(1, 1)).await;
    ready_is(&job, 200, "ready", 60).await;
    for i in 0..1_000 {
        send(&producer, potato, &format!("poison-{i}"), Some(b"not json")).await;
    }
    metric_is(
        &job,
        "leafsync_job_stalled",
        &[("reason", "dead-letter-breaker")],
        1,
        60,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = topic_end(&w.brokers, &w.dlq);
    assert!(dead <= 100, "at most half the 200-record window: {dead}");
    for restart in 1..=3 {
        job.stop().await;
        job = JobProcess::spawn(&config);
        ready_is(&job, 503, "dead-letter-breaker", 60).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            topic_end(&w.brokers, &w.dlq),
            dead,
            "restart {restart} dead-lettered more"
        );
    }
    let state = w
        .mongo()
        .await
        .collection::<Document>(consumer_job::pipeline::STATE_COLLECTION)
        .find_one(doc! { "_id": format!("dead-letter-breaker:{}", w.group) })
        .await
        .unwrap()
        .expect("the open breaker is stored");
    assert!(
        state.get_str("reason").unwrap().contains("dead-lettered"),
        "{state}"
    );
    job.stop().await;
}

/// While open, the breaker tries one record per probe interval: poison goes to the
/// dead-letter topic one at a time; the first good record closes it and the rest flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_probes_one_record_at_a_time_and_closes_on_the_first_good_one() {
    let w = World::with_topics(1).await;
    let mut config = w.config();
    config.dlq_breaker_window = 10;
    config.dlq_breaker_max_share = 0.5;
    config.dlq_breaker_probe_interval_ms = 200;
    config.batch_max_messages = 5;
    let job = JobProcess::spawn(&config);
    let producer = w.producer();
    let potato = &w.plants[0];
    for i in 0..30 {
        send(&producer, potato, &format!("poison-{i}"), Some(b"not json")).await;
    }
    for id in 1..=5 {
        send_json(&producer, potato, &created(id, 1)).await;
    }
    metric_is(
        &job,
        "leafsync_job_stalled",
        &[("reason", "dead-letter-breaker")],
        1,
        60,
    )
    .await;
    wait_for_count(&w.mongo().await, COLLECTIONS[0], 5, 90).await;
    ready_is(&job, 200, "ready", 30).await;
    assert_eq!(
        topic_end(&w.brokers, &w.dlq),
        30,
        "every poison record, once"
    );
    let state = w
        .mongo()
        .await
        .collection::<Document>(consumer_job::pipeline::STATE_COLLECTION)
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(state, 0, "a closed breaker leaves no state behind");
    job.stop().await;
}

/// A proxy in front of the real server that answers every write with `refusal` while
/// `on` is set (reads, index builds and the handshake pass).
async fn refusing_proxy(on: Arc<AtomicBool>, refusal: fn() -> Rewrite) -> String {
    let port = mongo_proxy(
        leafsync_test_support::mongo_addr(),
        Arc::new(move |name: &str, _: &Document| {
            if is_write(name) && on.load(Ordering::SeqCst) {
                refusal()
            } else {
                Rewrite::Pass
            }
        }),
    )
    .await;
    format!("mongodb://127.0.0.1:{port}")
}

/// Every write refused (not authorized): the cluster's fault, not the records'. The job
/// holds, unready, commits and dead-letters nothing, and goes on once writes are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_refuses_every_write_holds_the_stream_unready_and_dead_letters_nothing() {
    let mut w = World::with_topics(1).await;
    let db = w.mongo().await;
    let on = Arc::new(AtomicBool::new(true));
    w.mongo_uri = refusing_proxy(Arc::clone(&on), || {
        Rewrite::Answer(command_error(
            13,
            "Unauthorized",
            "not authorized to execute insert",
        ))
    })
    .await;
    let job = JobProcess::spawn(&w.config());
    let producer = w.producer();
    for id in 1..=5 {
        send_json(&producer, &w.plants[0], &created(id, 1)).await;
    }
    ready_is(&job, 503, "mongo-refused", 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(topic_end(&w.brokers, &w.dlq), 0, "nothing dead-lettered");
    assert_eq!(
        db.collection::<Document>(COLLECTIONS[0])
            .count_documents(doc! {})
            .await
            .unwrap(),
        0
    );
    on.store(false, Ordering::SeqCst);
    wait_for_count(&db, COLLECTIONS[0], 5, 60).await;
    ready_is(&job, 200, "ready", 30).await;
    job.stop().await;
}

/// A write concern the deployment cannot satisfy (code 100) never clears by itself: the
/// job holds, unready, with its own reason, until it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsatisfiable_write_concern_holds_the_stream_unready_with_its_own_reason() {
    let mut w = World::with_topics(1).await;
    let db = w.mongo().await;
    let on = Arc::new(AtomicBool::new(true));
    w.mongo_uri = refusing_proxy(Arc::clone(&on), || {
        Rewrite::Reply(Box::new(|mut reply: Document| {
            reply.insert(
                "writeConcernError",
                doc! { "code": 100, "codeName": "UnsatisfiableWriteConcern", "errmsg": "Not enough data-bearing nodes" },
            );
            reply
        }))
    })
    .await;
    let job = JobProcess::spawn(&w.config());
    let producer = w.producer();
    for id in 1..=3 {
        send_json(&producer, &w.plants[0], &created(id, 1)).await;
    }
    ready_is(&job, 503, "write-concern", 60).await;
    assert_eq!(
        job.metric("leafsync_job_stalled", &[("reason", "write-concern")])
            .await,
        1
    );
    assert_eq!(topic_end(&w.brokers, &w.dlq), 0);
    on.store(false, Ordering::SeqCst);
    ready_is(&job, 200, "ready", 60).await;
    wait_committed_to_end(&w.brokers, &w.group, &w.plants[..1], 60).await;
    wait_for_count(&db, COLLECTIONS[0], 3, 10).await;
    job.stop().await;
}

/// Duplicate ids (a writer without a unique index) keep the job from building its own:
/// it holds unready, a member of its group, and goes on by itself after `dedupe --apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_conflict_holds_the_job_unready_until_dedupe_apply_and_then_it_resumes() {
    let w = World::with_topics(1).await;
    let db = w.mongo().await;
    let potato = db.collection::<Document>(COLLECTIONS[0]);
    potato
        .insert_many([
            doc! { "id": 1, "disease": "older", "updated_at": mongodb::bson::DateTime::from_millis(1_000) },
            doc! { "id": 1, "disease": "newer", "updated_at": mongodb::bson::DateTime::from_millis(2_000) },
        ])
        .await
        .unwrap();
    let config = w.config();
    let job = JobProcess::spawn(&config);
    let producer = w.producer();
    for id in 2..=4 {
        send_json(&producer, &w.plants[0], &created(id, 1)).await;
    }
    ready_is(&job, 503, "index", 60).await;
    eventually(30, "a member while held", || async {
        let (members, state) = group_members(&w.brokers, &w.group);
        if members == 1 {
            Ok(())
        } else {
            Err(format!("{members} members, {state}"))
        }
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dedupe"))
        .arg("--apply")
        .env("LEAFSYNC_MONGO_URI", &w.mongo_uri)
        .env("LEAFSYNC_MONGO_DB", &w.db)
        .env("LEAFSYNC_TOPICS", &config.topics)
        .output()
        .expect("dedupe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for_count(&db, COLLECTIONS[0], 4, 60).await;
    ready_is(&job, 200, "ready", 30).await;
    let kept = potato.find_one(doc! { "id": 1 }).await.unwrap().unwrap();
    assert_eq!(kept.get_str("disease").unwrap(), "newer");
    job.stop().await;
}
