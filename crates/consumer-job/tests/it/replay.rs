//! `dlq-replay` against real services (Apache Kafka, SecantusDB) and a running job: dead letters
//! go back to their source topics with their key, value and headers, the job applies what
//! is now applicable and dead-letters again what is still poison, and a replay ends even
//! while the job keeps adding dead letters.

use crate::common::{COLLECTIONS, World, created, header, image, read_topic, wait_for_count};
use consumer_job::{
    decode::{DeadLetter, DeadLetterReason},
    dlq::{self, header as h},
    replay::{REPLAYED_FROM, ReplayOptions, Skip, Summary, replay},
};
use rdkafka::{
    Message, Timestamp,
    message::{Header, OwnedHeaders, OwnedMessage},
};

async fn world() -> World {
    World::with_topics(1).await
}

/// A record as the job reads it from `topic`, keyed by the image id.
fn record(topic: &str, offset: i64, value: &serde_json::Value) -> OwnedMessage {
    OwnedMessage::new(
        Some(value.to_string().into_bytes()),
        Some(value["id"].to_string().into_bytes()),
        topic.to_owned(),
        Timestamp::NotAvailable,
        0,
        offset,
        None,
    )
}

fn options(w: &World) -> ReplayOptions {
    ReplayOptions {
        brokers: w.brokers.clone(),
        dlq_topic: w.dlq.clone(),
        reasons: Vec::new(),
        source_topics: Vec::new(),
        from_offset: 0,
        dry_run: false,
    }
}

/// Puts three dead letters in the DLQ, in this order: a genuine poison record from potato
/// (dead-lettered by the running job), a valid tomato event MongoDB refused, and a pepper
/// event whose value was left out. Returns the poison value and the refused event.
async fn three_dead_letters(w: &World) -> (&'static [u8], serde_json::Value) {
    let producer = w.producer();
    let [potato, tomato, pepper] = &w.plants;
    // 1. A genuine poison record, with a header of its own, dead-lettered by the job.
    let headers = OwnedHeaders::new().insert(Header {
        key: "trace-id",
        value: Some("abc"),
    });
    let poison = br#"{"id": 5, "created_at": "yesterday"}"#;
    producer
        .send(
            rdkafka::producer::FutureRecord::to(potato)
                .key("5")
                .payload(&poison[..])
                .headers(headers),
            std::time::Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("poison produced");
    read_topic(&w.brokers, &w.dlq, 1, 60).await;
    // 2. A valid event dead-lettered the way the job does when MongoDB refuses a write
    //    for good (the cause, say a collection validator, is then fixed).
    let refused = created(7, 1);
    let letter = |reason: DeadLetterReason, omit_value| DeadLetter {
        omit_value,
        ..DeadLetter::new(reason, "test")
    };
    dlq::send(
        &producer,
        &w.dlq,
        &record(tomato, 3, &refused),
        &letter(DeadLetterReason::MongoRejected, false),
    )
    .await
    .expect("dead letter sent");
    // 3. A dead letter whose value was left out: nothing to replay.
    dlq::send(
        &producer,
        &w.dlq,
        &record(pepper, 0, &created(8, 1)),
        &letter(DeadLetterReason::Oversized, true),
    )
    .await
    .expect("dead letter sent");

    (poison, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_into_their_source_topics_and_what_is_still_poison_returns() {
    let w = world().await;
    let job = w.start().await;
    let [potato, tomato, _] = &w.plants;

    let (poison, refused) = three_dead_letters(&w).await;

    // A dry run reports and produces nothing.
    let mut lines = Vec::new();
    let dry = replay(
        &ReplayOptions {
            dry_run: true,
            ..options(&w)
        },
        |o| lines.push(o.clone()),
    )
    .await
    .expect("dry run");
    assert_eq!(
        dry,
        Summary {
            read: 3,
            replayed: 2,
            filtered: 0,
            not_replayable: 1,
            dry_run: true,
        }
    );
    assert_eq!(lines[0].source_topic, *potato);
    assert_eq!(lines[0].reason, "invalid-date");
    assert_eq!(lines[0].result, Ok(None));
    let omitted = created(8, 1).to_string().len().to_string();
    assert_eq!(lines[2].result, Err(Skip::ValueOmitted(omitted)));

    // Only the refused write: it reaches MongoDB, first in its topic (the dry run sent nothing).
    let mut lines = Vec::new();
    let only = replay(
        &ReplayOptions {
            reasons: vec!["mongo-rejected".into()],
            ..options(&w)
        },
        |o| lines.push(o.clone()),
    )
    .await
    .expect("replay");
    assert_eq!(
        (only.replayed, only.filtered, only.not_replayable),
        (1, 2, 0)
    );
    assert_eq!(lines[1].result, Ok(Some((0, 0))));
    let db = w.mongo().await;
    wait_for_count(&db, COLLECTIONS[1], 1, 60).await;
    assert_eq!(
        image(&db, COLLECTIONS[1], 7).await.get_i32("camera_id"),
        Ok(4)
    );
    let replayed = read_topic(&w.brokers, tomato, 1, 30).await;
    assert_eq!(replayed[0].key(), Some(&b"7"[..]));
    assert_eq!(replayed[0].payload(), Some(refused.to_string().as_bytes()));
    assert_eq!(
        header(&replayed[0], REPLAYED_FROM),
        Some(format!("{}[0]@1", w.dlq).as_str())
    );
    assert_eq!(header(&replayed[0], h::REASON), None);

    // Everything: the poison goes back and is dead-lettered again, with its own header and
    // its new origin; the refused write is replayed again and changes nothing.
    let all = replay(&options(&w), |_| {}).await.expect("replay");
    assert_eq!((all.read, all.replayed, all.not_replayable), (3, 2, 1));
    let letters = read_topic(&w.brokers, &w.dlq, 4, 60).await;
    let again = &letters[3];
    assert_eq!(header(again, h::REASON), Some("invalid-date"));
    assert_eq!(header(again, h::SOURCE_TOPIC), Some(potato.as_str()));
    assert_eq!(header(again, h::SOURCE_OFFSET), Some("1"));
    assert_eq!(header(again, "trace-id"), Some("abc"));
    assert_eq!(again.payload(), Some(poison));
    job.wait_metric(
        "leafsync_job_images_total",
        &[("outcome", "unchanged")],
        1,
        60,
    )
    .await;
    wait_for_count(&db, COLLECTIONS[1], 1, 5).await;

    // From an offset: only the newest dead letter.
    let last = replay(
        &ReplayOptions {
            from_offset: 3,
            dry_run: true,
            ..options(&w)
        },
        |_| {},
    )
    .await
    .expect("replay");
    assert_eq!((last.read, last.replayed), (1, 1));
    job.stop().await;
}
