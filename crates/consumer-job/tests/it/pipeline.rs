//! The job end to end against real services: Apache Kafka and SecantusDB
//! (MongoDB wire protocol), started by `scripts/test.sh`. Every test has its own topics,
//! consumer group and database.

use crate::common::{
    COLLECTIONS, World, created, eventually, header, image, read_topic, send, send_json,
    wait_applied, wait_for_count,
};
use consumer_job::dlq::header as h;
use mongodb::bson::Bson;
use rdkafka::Message;
use serde_json::json;

async fn world() -> World {
    World::with_topics(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_partial_updates_and_soft_deletes_reach_mongo_and_a_replay_changes_nothing()
{
    let w = world().await;
    let job = w.start().await;
    let producer = w.producer();
    let [potato, tomato, _] = &w.plants;

    for id in 1..=5 {
        send_json(&producer, potato, &created(id, 2)).await;
    }
    send_json(&producer, tomato, &created(1, 2)).await;
    send_json(
        &producer,
        potato,
        &json!({"id": 2, "is_active": true, "updated_at": "2023-10-09T10:00:00"}),
    )
    .await;
    send_json(
        &producer,
        potato,
        &json!({"id": 3, "disease": "Healthy", "percentage": 0.995}),
    )
    .await;
    send_json(
        &producer,
        potato,
        &json!({"id": 4, "is_deleted": true, "updated_at": "2023-10-09T11:00:00.5"}),
    )
    .await;

    let db = w.mongo().await;
    wait_for_count(&db, COLLECTIONS[0], 5, 60).await;
    wait_for_count(&db, COLLECTIONS[1], 1, 60).await;
    wait_applied(&job, 9).await;

    let two = image(&db, COLLECTIONS[0], 2).await;
    assert!(two.get_bool("is_active").unwrap());
    assert!(matches!(two.get("updated_at"), Some(Bson::DateTime(_))));
    assert!(matches!(two.get("data"), Some(Bson::Binary(b)) if b.bytes.len() == 2048 + 4));
    let three = image(&db, COLLECTIONS[0], 3).await;
    assert_eq!(three.get_str("disease").unwrap(), "Healthy");
    assert_eq!(
        three.get_f64("percentage").unwrap().to_bits(),
        0.995_f64.to_bits()
    );
    assert_eq!(
        three.get_i32("camera_id").unwrap(),
        4,
        "a partial update keeps the other fields"
    );
    assert!(
        image(&db, COLLECTIONS[0], 4)
            .await
            .get_bool("is_deleted")
            .unwrap()
    );
    assert_eq!(
        job.metric("leafsync_job_images_total", &[("outcome", "inserted")]),
        6
    );
    assert_eq!(
        job.metric("leafsync_job_images_total", &[("outcome", "updated")]),
        3
    );
    assert_eq!(job.metric("leafsync_job_dead_lettered_total", &[]), 0);
    job.stop().await;

    // A new group replays every event from the start: nothing may change.
    let before: Vec<_> = futures_docs(&db).await;
    let replay_world = World {
        group: leafsync_test_support::unique_name("replay"),
        ..w.clone()
    };
    let replay = replay_world.start().await;
    wait_applied(&replay, 9).await;
    assert_eq!(
        replay.metric("leafsync_job_images_total", &[("outcome", "inserted")]),
        0
    );
    // Versioned events replay as unchanged or stale. Image 3's partial update carries no
    // updated_at, so nothing orders it against create(3): the replay re-applies both, in
    // partition order, and converges to the same document (checked below). Exactly those
    // two writes are updates.
    assert_eq!(
        replay.metric("leafsync_job_images_total", &[("outcome", "updated")]),
        2
    );
    assert_eq!(
        replay.metric("leafsync_job_images_total", &[("outcome", "stale")]),
        2,
        "create(2) and create(4)"
    );
    replay.stop().await;
    assert_eq!(
        futures_docs(&db).await,
        before,
        "a replay leaves every document as it was"
    );
}

async fn futures_docs(db: &mongodb::Database) -> Vec<mongodb::bson::Document> {
    use futures::TryStreamExt;
    let mut all = Vec::new();
    for c in COLLECTIONS {
        let cursor = db
            .collection::<mongodb::bson::Document>(c)
            .find(mongodb::bson::doc! {})
            .sort(mongodb::bson::doc! { "id": 1 })
            .await
            .unwrap();
        all.extend(cursor.try_collect::<Vec<_>>().await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_stale_event_never_overwrites_a_newer_image() {
    let w = world().await;
    let job = w.start().await;
    let producer = w.producer();
    let potato = &w.plants[0];

    send_json(&producer, potato, &created(7, 1)).await;
    send_json(
        &producer,
        potato,
        &json!({"id": 7, "disease": "Late blight", "updated_at": "2023-10-09T12:00:00"}),
    )
    .await;
    send_json(
        &producer,
        potato,
        &json!({"id": 7, "disease": "Healthy", "updated_at": "2023-10-09T11:00:00"}),
    )
    .await;
    send_json(&producer, potato, &created(7, 1)).await;

    wait_applied(&job, 4).await;
    assert_eq!(
        job.metric("leafsync_job_images_total", &[("outcome", "stale")]),
        2
    );
    let seven = image(&w.mongo().await, COLLECTIONS[0], 7).await;
    assert_eq!(seven.get_str("disease").unwrap(), "Late blight");
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_with_their_origin_and_the_pipeline_continues() {
    let w = world().await;
    let mut config = w.config();
    config.max_record_bytes = 64 * 1024;
    let job = crate::common::start_job(config).await;
    let producer = w.producer();
    let potato = &w.plants[0];

    let oversized = created(99, 80).to_string();
    let poison: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("invalid-json", Some(b"{not json".to_vec())),
        ("missing-id", Some(br#"{"camera_id": 1}"#.to_vec())),
        ("invalid-id", Some(br#"{"id": "seven"}"#.to_vec())),
        ("invalid-hex", Some(br#"{"id": 1, "data": "xyz"}"#.to_vec())),
        (
            "invalid-date",
            Some(br#"{"id": 1, "created_at": "yesterday"}"#.to_vec()),
        ),
        (
            "wrong-type",
            Some(br#"{"id": 1, "is_active": "yes"}"#.to_vec()),
        ),
        ("tombstone", None),
        ("oversized", Some(oversized.into_bytes())),
    ];
    for (i, (_, value)) in poison.iter().enumerate() {
        send(&producer, potato, &format!("poison-{i}"), value.as_deref()).await;
    }
    send_json(&producer, potato, &created(1, 1)).await;

    let db = w.mongo().await;
    wait_for_count(&db, COLLECTIONS[0], 1, 60).await;
    let letters = read_topic(&w.brokers, &w.dlq, poison.len(), 60).await;
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|m| header(m, h::REASON).expect("reason header"))
        .collect();
    reasons.sort_unstable();
    let mut expected: Vec<&str> = poison.iter().map(|(r, _)| *r).collect();
    expected.sort_unstable();
    assert_eq!(reasons, expected);
    for letter in &letters {
        assert_eq!(header(letter, h::SOURCE_TOPIC), Some(potato.as_str()));
        assert!(
            header(letter, h::SOURCE_PARTITION)
                .unwrap()
                .parse::<i32>()
                .is_ok()
        );
        assert!(
            header(letter, h::SOURCE_OFFSET)
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert!(!header(letter, h::ERROR).unwrap().is_empty());
        match header(letter, h::REASON) {
            Some("oversized") => {
                assert!(letter.payload().is_none(), "an oversized value is left out");
                assert!(
                    header(letter, h::VALUE_OMITTED)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                        > 64 * 1024
                );
            }
            Some("tombstone") => assert!(letter.payload().is_none()),
            _ => assert!(
                letter.payload().is_some(),
                "the original value travels with the letter"
            ),
        }
    }
    job.wait_metric("leafsync_job_dead_lettered_total", &[], 8, 30)
        .await;
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_job_resumes_at_the_committed_offset_without_loss_or_replay() {
    let w = world().await;
    let producer = w.producer();
    let tomato = &w.plants[1];
    let db = w.mongo().await;

    let first = w.start().await;
    for id in 1..=10 {
        send_json(&producer, tomato, &created(id, 1)).await;
    }
    wait_for_count(&db, COLLECTIONS[1], 10, 60).await;
    first.stop().await;

    for id in 11..=15 {
        send_json(&producer, tomato, &created(id, 1)).await;
    }
    let second = w.start().await;
    wait_for_count(&db, COLLECTIONS[1], 15, 60).await;
    second
        .wait_metric("leafsync_job_commits_total", &[("result", "ok")], 1, 30)
        .await;
    assert_eq!(
        second.metric("leafsync_job_events_consumed_total", &[]),
        5,
        "the second run starts after the first run's committed offsets"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_in_one_group_share_the_partitions_without_loss() {
    let w = world().await;
    let producer = w.producer();
    let a = w.start().await;
    let b = w.start().await;
    eventually(
        60,
        "both jobs own partitions of all three topics",
        || async {
            let (pa, pb) = (
                a.metric("leafsync_job_assigned_partitions", &[]),
                b.metric("leafsync_job_assigned_partitions", &[]),
            );
            if pa >= 1 && pb >= 1 && pa + pb == 9 {
                Ok(())
            } else {
                Err(format!("{pa} + {pb}"))
            }
        },
    )
    .await;

    for id in 1..=30 {
        send_json(
            &producer,
            &w.plants[usize::try_from(id % 3).unwrap()],
            &created(id, 1),
        )
        .await;
    }
    let db = w.mongo().await;
    for c in COLLECTIONS {
        wait_for_count(&db, c, 10, 60).await;
    }
    let (ca, cb) = (
        a.metric("leafsync_job_events_consumed_total", &[]),
        b.metric("leafsync_job_events_consumed_total", &[]),
    );
    assert!(ca > 0 && cb > 0, "both replicas did work: {ca} and {cb}");
    assert!(ca + cb >= 30);
    a.stop().await;
    b.stop().await;
}

/// The `n` an image was last set to (0 when never).
fn version_of(doc: &mongodb::bson::Document) -> i64 {
    match doc.get("n") {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        _ => 0,
    }
}

/// Many batches in flight one after another: per-image order holds across them, and at
/// every moment the committed offset covers only records already durable in MongoDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_keep_each_images_order_and_commit_only_what_is_durable() {
    use futures::TryStreamExt;
    use rdkafka::{
        ClientConfig, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };

    const IMAGES: i64 = 10;
    const VERSIONS: i64 = 60;
    let w = World::with_topics(1).await;
    let producer = w.producer();
    let potato = &w.plants[0];
    // Unversioned partial updates: only the order of application decides the result.
    // Record at offset (v - 1) * IMAGES + (id - 1) sets image `id`'s `n` to `v`.
    for v in 1..=VERSIONS {
        for id in 1..=IMAGES {
            send_json(&producer, potato, &json!({"id": id, "n": v})).await;
        }
    }
    let mut config = w.config();
    config.batch_max_messages = 7;
    let job = crate::common::start_job(config).await;

    let offsets: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &w.brokers)
        .set("group.id", &w.group)
        .create()
        .expect("offset reader");
    let db = w.mongo().await;
    let total = u64::try_from(IMAGES * VERSIONS).unwrap();
    let mut checks = 0;
    loop {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(potato, 0);
        let committed = tokio::task::block_in_place(|| {
            offsets.committed_offsets(tpl, std::time::Duration::from_secs(5))
        })
        .expect("committed offsets");
        let committed = match committed.elements()[0].offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        // Read the DB after the offset: it only moves forward, so every record below the
        // committed offset must already show.
        let stored: Vec<mongodb::bson::Document> = db
            .collection(COLLECTIONS[0])
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        for id in 1..=IMAGES {
            // The newest version of `id` among records below `committed`.
            let due = (committed - id + IMAGES) / IMAGES;
            let n = stored
                .iter()
                .find(|d| d.get_i32("id") == Ok(i32::try_from(id).unwrap()))
                .map_or(0, version_of);
            assert!(
                n >= due,
                "offset {committed} is committed but image {id} is at version {n}, not {due}"
            );
        }
        checks += 1;
        if u64::try_from(committed).unwrap() == total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for id in 1..=IMAGES {
        let doc = image(&db, COLLECTIONS[0], i32::try_from(id).unwrap()).await;
        assert_eq!(version_of(&doc), VERSIONS, "image {id}");
    }
    assert!(
        checks > 3,
        "the commit was observed while the stream was in flight"
    );
    let batches = job.metric("leafsync_job_batch_size_count", &[]);
    assert!(
        batches >= total / 7,
        "{batches} batches of at most 7 records"
    );
    job.stop().await;
}

/// A flood of poison is not the records' fault: past the breaker's share the job holds the
/// stream, unready, instead of draining the topic into the dead-letter topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_poison_opens_the_breaker_instead_of_draining_the_topic_into_dead_letters() {
    let w = world().await;
    let producer = w.producer();
    let potato = &w.plants[0];
    let mut config = w.config();
    config.dlq_breaker_window = 20;
    config.dlq_breaker_max_share = 0.5;
    config.batch_max_messages = 5;
    let mut job = crate::common::JobProcess::spawn(&config);
    send_json(&producer, potato, &created(1, 1)).await;
    eventually(60, "the job is up and ready", || async {
        let (status, body) = job.get("/ready").await;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    for i in 0..60 {
        send(&producer, potato, &format!("poison-{i}"), Some(b"not json")).await;
    }
    eventually(60, "the breaker opens", || async {
        let n = job
            .metric("leafsync_job_stalled", &[("reason", "dead-letter-breaker")])
            .await;
        if n == 1 {
            Ok(())
        } else {
            Err(format!("stalled={n}"))
        }
    })
    .await;
    let (status, ready) = job.get("/ready").await;
    assert_eq!(status, 503, "unready while held: {ready}");
    assert!(ready.contains("dead-letter-breaker"), "{ready}");
    let dead = job.metric("leafsync_job_dead_lettered_total", &[]).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        job.metric("leafsync_job_dead_lettered_total", &[]).await,
        dead,
        "nothing more is dead-lettered while held"
    );
    assert!(
        dead <= 10,
        "at most half the window went to the DLQ, not the flood: {dead}"
    );
    let (_, status) = job.terminate(std::time::Duration::from_secs(30)).await;
    assert!(status.success());
}
