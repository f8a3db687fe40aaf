//! Inputs that once broke the promise "the consumer DB ends at the producer's newest
//! version of every image, whatever arrives", on the real job, Kafka and SecantusDB: a
//! version from a producer with a wrong clock, a document that collides on a unique
//! index other than `id`'s, a document the server refuses alone with a code nobody knows.

use std::sync::Arc;

use crate::common::{
    COLLECTIONS, World, created, header, image, read_topic, send_json, wait_for_count,
};
use consumer_job::dlq::header as h;
use leafsync_test_support::wire::{Rewrite, mongo_proxy};
use mongodb::bson::{Bson, Document, doc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_dated_2999_is_dead_lettered_and_the_next_real_update_still_applies() {
    let w = World::with_topics(1).await;
    let job = w.start().await;
    let producer = w.producer();
    let potato = &w.plants[0];
    let db = w.mongo().await;

    send_json(&producer, potato, &created(1, 1)).await;
    let frozen = json!({"id": 1, "disease": "frozen", "updated_at": "2999-01-01T00:00:00"});
    send_json(&producer, potato, &frozen).await;
    let real = json!({"id": 1, "disease": "Healthy", "updated_at": "2024-05-01T12:00:00"});
    send_json(&producer, potato, &real).await;

    let letters = read_topic(&w.brokers, &w.dlq, 1, 60).await;
    assert_eq!(header(&letters[0], h::REASON), Some("future-version"));
    let skew: i64 = header(&letters[0], h::FUTURE_SKEW)
        .and_then(|s| s.parse().ok())
        .expect("the skew header");
    assert!(skew > 30_000_000_000, "about 975 years: {skew} s");
    crate::common::eventually(60, "the real update applied", || async {
        let doc = image(&db, COLLECTIONS[0], 1).await;
        match doc.get_str("disease") {
            Ok("Healthy") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let doc = image(&db, COLLECTIONS[0], 1).await;
    assert_eq!(
        doc.get_datetime("updated_at")
            .unwrap()
            .try_to_rfc3339_string()
            .unwrap(),
        "2024-05-01T12:00:00Z"
    );
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_on_another_unique_index_is_dead_lettered_with_its_index_and_never_counted_stale()
 {
    let w = World::with_topics(1).await;
    let db = w.mongo().await;
    db.collection::<Document>(COLLECTIONS[0])
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "label": 1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .sparse(true)
                        .build(),
                )
                .build(),
        )
        .await
        .expect("a second unique index");
    let job = w.start().await;
    let producer = w.producer();
    let [potato, tomato, _] = &w.plants;
    for id in [1, 2] {
        let mut event = created(id, 1);
        event["label"] = json!("x");
        send_json(&producer, potato, &event).await;
    }
    send_json(&producer, tomato, &created(5, 1)).await;

    let letters = read_topic(&w.brokers, &w.dlq, 1, 60).await;
    let letter = &letters[0];
    assert_eq!(header(letter, h::REASON), Some("duplicate-key"));
    assert_eq!(header(letter, h::INDEX), Some("label_1"));
    assert_eq!(header(letter, h::CODE), Some("11000"));
    assert_eq!(header(letter, h::SOURCE_OFFSET), Some("1"));
    wait_for_count(&db, COLLECTIONS[1], 1, 60).await;
    wait_for_count(&db, COLLECTIONS[0], 1, 60).await;
    assert_eq!(
        image(&db, COLLECTIONS[0], 1)
            .await
            .get_str("label")
            .unwrap(),
        "x"
    );
    assert_eq!(
        job.metric("leafsync_job_images_total", &[("outcome", "stale")]),
        0
    );
    job.stop().await;
}

/// The collection refuses `disease: "poison"` (a validator), and a proxy in front of the
/// server turns that refusal's code into one no list knows: the statement must be told
/// apart from a refusing cluster by behaviour, retried alone, then dead-lettered with its
/// real code, while the rest of its plant and the other plants flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_refused_alone_with_an_unknown_code_is_dead_lettered_and_the_rest_flows() {
    const UNKNOWN: i32 = 4242;
    let mut w = World::with_topics(1).await;
    let db = w.mongo().await;
    db.create_collection(COLLECTIONS[0])
        .validator(doc! { "disease": { "$ne": "poison" } })
        .await
        .expect("a collection with a validator");
    let proxy = mongo_proxy(
        leafsync_test_support::mongo_addr(),
        Arc::new(|name: &str, _: &Document| {
            if !leafsync_test_support::wire::is_write(name) {
                return Rewrite::Pass;
            }
            Rewrite::Reply(Box::new(|mut reply: Document| {
                if let Ok(errors) = reply.get_array_mut("writeErrors") {
                    for error in errors {
                        if let Bson::Document(e) = error {
                            if e.get_i32("code") == Ok(121) {
                                e.insert("code", UNKNOWN);
                                e.insert("errmsg", "a refusal nobody documented");
                            }
                        }
                    }
                }
                reply
            }))
        }),
    )
    .await;
    w.mongo_uri = format!("mongodb://127.0.0.1:{proxy}");
    let job = w.start().await;
    let producer = w.producer();
    let [potato, tomato, _] = &w.plants;
    for id in 1..=3 {
        let mut event = created(id, 1);
        if id == 2 {
            event["disease"] = json!("poison");
        }
        send_json(&producer, potato, &event).await;
    }
    send_json(&producer, tomato, &created(7, 1)).await;

    let letters = read_topic(&w.brokers, &w.dlq, 1, 90).await;
    assert_eq!(header(&letters[0], h::REASON), Some("mongo-rejected"));
    assert_eq!(header(&letters[0], h::CODE), Some("4242"));
    assert!(
        header(&letters[0], h::ERROR).is_some_and(|e| e.contains("a refusal nobody documented")),
        "{:?}",
        header(&letters[0], h::ERROR)
    );
    wait_for_count(&db, COLLECTIONS[0], 2, 60).await;
    wait_for_count(&db, COLLECTIONS[1], 1, 60).await;
    assert_eq!(
        job.metric("leafsync_job_stalled", &[("reason", "mongo-refused")]),
        0
    );
    job.stop().await;
}
