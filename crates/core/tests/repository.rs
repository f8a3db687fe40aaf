//! The repository against a real MongoDB wire server (SecantusDB under `scripts/test.sh`),
//! each test in a database of its own, on both write paths.

use leafsync_core::{
    ImageChange, ImageFilter, ImageRepository, Write, WriteOutcome, WritePath, view::image_json,
};
use leafsync_test_support::{mongo_client, unique_name};
use mongodb::bson::{Bson, Document, spec::BinarySubtype};
use serde_json::{Value, json};

const COLL: &str = "imagecolplantpotato";

async fn repository(path: WritePath) -> ImageRepository {
    let repo = ImageRepository::new(mongo_client().await, &unique_name("core"), path);
    repo.ensure_indexes(&[COLL])
        .await
        .expect("unique index on id");
    repo
}

fn write(event: &Value) -> Write {
    Write {
        collection: leafsync_core::CollectionName::parse(COLL).unwrap(),
        change: ImageChange::from_json_slice(event.to_string().as_bytes()).expect("valid event"),
    }
}

fn created(id: i64) -> Value {
    json!({
        "id": id, "camera_id": 1, "data": "ffd8ffe000104a464946",
        "gps_coordinates": [48.47, 16.58], "created_at": "2023-10-08T15:39:49.123123",
        "updated_at": null, "is_active": false, "is_deleted": false,
        "disease": null, "percentage": null,
    })
}

async fn stored(repo: &ImageRepository, id: i64) -> Document {
    repo.find_by_id(COLL, id)
        .await
        .unwrap()
        .expect("image is stored")
}

#[tokio::test]
async fn an_upserted_image_has_the_producer_db_bson_types() {
    let repo = repository(WritePath::Auto).await;
    let outcomes = repo.apply(&[write(&created(1))]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Inserted]);

    let doc = stored(&repo, 1).await;
    assert!(matches!(doc.get("_id"), Some(Bson::ObjectId(_))));
    assert_eq!(doc.get("id"), Some(&Bson::Int32(1)));
    assert_eq!(doc.get("camera_id"), Some(&Bson::Int32(1)));
    match doc.get("data") {
        Some(Bson::Binary(bin)) => {
            assert_eq!(bin.subtype, BinarySubtype::Generic);
            assert_eq!(bin.bytes[..4], [0xff, 0xd8, 0xff, 0xe0]);
        }
        other => panic!("data is not Binary: {other:?}"),
    }
    assert!(matches!(doc.get("created_at"), Some(Bson::DateTime(_))));
    assert_eq!(doc.get("updated_at"), Some(&Bson::Null));
    assert_eq!(
        doc.get("gps_coordinates"),
        Some(&Bson::Array(vec![Bson::Double(48.47), Bson::Double(16.58)]))
    );
    let mut expected = created(1);
    expected["created_at"] = json!("2023-10-08T15:39:49.123000");
    assert_eq!(image_json(&doc), expected);
}

async fn replays_updates_and_stale_events_are_told_apart(path: WritePath) {
    let repo = repository(path).await;
    let update = json!({"id": 2, "is_active": true, "updated_at": "2023-10-09T10:00:00"});
    let older = json!({"id": 2, "is_active": false, "updated_at": "2023-10-09T09:00:00"});
    let partial = json!({"id": 2, "disease": "Healthy", "percentage": 0.995});

    let outcomes = repo.apply(&[write(&created(2))]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Inserted]);
    let outcomes = repo.apply(&[write(&created(2))]).await.unwrap();
    assert_eq!(
        outcomes,
        [WriteOutcome::Unchanged],
        "a replayed create changes nothing"
    );
    let outcomes = repo.apply(&[write(&update)]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Updated]);
    let outcomes = repo
        .apply(&[write(&update), write(&older), write(&created(2))])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Unchanged,
            WriteOutcome::Stale,
            WriteOutcome::Stale
        ],
        "an older update and a replayed create never move the image backwards"
    );
    let outcomes = repo.apply(&[write(&partial)]).await.unwrap();
    assert_eq!(
        outcomes,
        [WriteOutcome::Updated],
        "an unversioned partial update applies"
    );

    let doc = stored(&repo, 2).await;
    assert!(doc.get_bool("is_active").unwrap());
    assert_eq!(doc.get_str("disease").unwrap(), "Healthy");
    assert!(doc.get_datetime("updated_at").is_ok());
    assert_eq!(
        doc.get_i32("camera_id").unwrap(),
        1,
        "fields absent from updates are kept"
    );
    let outcomes = repo
        .apply(&[write(
            &json!({"id": 2, "is_deleted": true, "updated_at": "2023-10-10T00:00:00"}),
        )])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [WriteOutcome::Updated],
        "a soft delete is an update"
    );
    assert!(stored(&repo, 2).await.get_bool("is_deleted").unwrap());
}

#[tokio::test]
async fn replays_updates_and_stale_events_are_told_apart_with_bulk_write() {
    replays_updates_and_stale_events_are_told_apart(WritePath::BulkWrite).await;
}

#[tokio::test]
async fn replays_updates_and_stale_events_are_told_apart_with_the_default_path() {
    replays_updates_and_stale_events_are_told_apart(WritePath::Auto).await;
}

async fn one_batch_keeps_each_images_events_in_order(path: WritePath) {
    let repo = repository(path).await;
    let batch = [
        write(&created(10)),
        write(&created(11)),
        write(&json!({"id": 10, "is_active": true})),
        write(&json!({"id": 10, "is_active": false})),
        write(&json!({"id": 11, "disease": "Late blight", "updated_at": "2024-01-01T00:00:00"})),
        write(&json!({"id": 10, "camera_id": 4})),
    ];
    let outcomes = repo.apply(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Inserted,
            WriteOutcome::Inserted,
            WriteOutcome::Updated,
            WriteOutcome::Updated,
            WriteOutcome::Updated,
            WriteOutcome::Updated,
        ]
    );
    let ten = stored(&repo, 10).await;
    assert!(!ten.get_bool("is_active").unwrap(), "the last event wins");
    assert_eq!(ten.get_i32("camera_id").unwrap(), 4);
    assert_eq!(
        stored(&repo, 11).await.get_str("disease").unwrap(),
        "Late blight"
    );
    assert_eq!(
        repo.count(
            COLL,
            ImageFilter {
                include_deleted: true,
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        2
    );
}

#[tokio::test]
async fn one_batch_keeps_each_images_events_in_order_with_bulk_write() {
    one_batch_keeps_each_images_events_in_order(WritePath::BulkWrite).await;
}

#[tokio::test]
async fn one_batch_keeps_each_images_events_in_order_with_the_default_path() {
    one_batch_keeps_each_images_events_in_order(WritePath::Auto).await;
}

#[tokio::test]
async fn counts_lists_and_picks_honour_the_filters() {
    let repo = repository(WritePath::Auto).await;
    let mut batch = Vec::new();
    for id in 1..=6 {
        let mut event = created(id);
        event["is_active"] = json!(id % 2 == 0);
        event["disease"] = if id <= 2 {
            json!("Healthy")
        } else {
            Value::Null
        };
        event["is_deleted"] = json!(id == 6);
        batch.push(write(&event));
    }
    repo.apply(&batch).await.unwrap();

    let all = ImageFilter {
        include_deleted: true,
        ..Default::default()
    };
    let live = ImageFilter::default();
    let active = ImageFilter {
        is_active: Some(true),
        ..Default::default()
    };
    let diseased = ImageFilter {
        has_disease: Some(true),
        ..Default::default()
    };
    assert_eq!(repo.count(COLL, all).await.unwrap(), 6);
    assert_eq!(repo.count(COLL, live).await.unwrap(), 5);
    assert_eq!(
        repo.count(COLL, active).await.unwrap(),
        2,
        "ids 2 and 4; 6 is deleted"
    );
    assert_eq!(repo.count(COLL, diseased).await.unwrap(), 2);

    let page = repo.list(COLL, 3, 2, live).await.unwrap();
    let ids: Vec<i32> = page.iter().map(|d| d.get_i32("id").unwrap()).collect();
    assert_eq!(ids, [3, 4]);
    let third = repo.nth(COLL, active, 1).await.unwrap().unwrap();
    assert_eq!(third.get_i32("id").unwrap(), 4);
    assert!(repo.nth(COLL, active, 2).await.unwrap().is_none());
    assert!(repo.find_by_id(COLL, 99).await.unwrap().is_none());
}

/// The stale guard's meaning, stored state by stored state, on both write paths.
async fn a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only(
    path: WritePath,
) {
    let repo = repository(path).await;
    let coll = repo.database().collection::<Document>(COLL);
    let stored_states = [
        (1, Bson::Null),
        (2, Bson::String("2023-10-09T10:00:00".to_owned())),
        (3, Bson::DateTime(mongodb::bson::DateTime::from_millis(0))),
        (
            5,
            Bson::DateTime(mongodb::bson::DateTime::from_millis(
                4_102_444_800_000, /* 2100-01-01 */
            )),
        ),
    ];
    for (id, updated_at) in stored_states {
        coll.insert_one(
            mongodb::bson::doc! { "id": id, "updated_at": updated_at, "is_active": false },
        )
        .await
        .unwrap();
    }
    // Image 4 has no updated_at at all (written by something that never set it).
    coll.insert_one(mongodb::bson::doc! { "id": 4, "is_active": false })
        .await
        .unwrap();
    let event = |id: i64| json!({"id": id, "is_active": true, "updated_at": "2023-10-09T10:00:00"});
    let outcomes = repo
        .apply(&(1..=5).map(|id| write(&event(id))).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Updated,
            WriteOutcome::Updated,
            WriteOutcome::Updated,
            WriteOutcome::Updated,
            WriteOutcome::Stale
        ],
        "null, mistyped (string), older and missing versions are overwritten; a newer one is not"
    );
    for id in 1..=4 {
        assert!(
            stored(&repo, id).await.get_bool("is_active").unwrap(),
            "image {id}"
        );
        assert!(
            stored(&repo, id).await.get_datetime("updated_at").is_ok(),
            "image {id}"
        );
    }
    assert!(!stored(&repo, 5).await.get_bool("is_active").unwrap());
}

#[tokio::test]
async fn a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only_with_bulk_write()
 {
    a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only(
        WritePath::BulkWrite,
    )
    .await;
}

#[tokio::test]
async fn a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only_with_the_default_path()
 {
    a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only(WritePath::Auto)
        .await;
}

#[tokio::test]
async fn two_updates_within_one_millisecond_delivered_newest_first_end_at_the_newest() {
    let repo = repository(WritePath::Auto).await;
    let newer =
        json!({"id": 7, "disease": "Late blight", "updated_at": "2023-10-09T10:00:00.000700"});
    let older = json!({"id": 7, "disease": "Healthy", "updated_at": "2023-10-09T10:00:00.000300"});
    repo.apply(&[write(&created(7))]).await.unwrap();
    let outcomes = repo.apply(&[write(&newer)]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Updated]);
    let outcomes = repo.apply(&[write(&older)]).await.unwrap();
    assert_eq!(
        outcomes,
        [WriteOutcome::Stale],
        "the older update is older by 400 µs, though both are the same BSON millisecond"
    );
    let doc = stored(&repo, 7).await;
    assert_eq!(doc.get_str("disease").unwrap(), "Late blight");
    let shown = image_json(&doc);
    assert_eq!(shown["updated_at"], json!("2023-10-09T10:00:00"));
    assert!(
        shown.get(leafsync_core::VERSION_FIELD).is_none(),
        "the API never shows the microsecond version"
    );
    // The same version again is a replay, not a stale event.
    let outcomes = repo.apply(&[write(&newer)]).await.unwrap();
    assert_eq!(outcomes, [WriteOutcome::Unchanged]);
}

#[tokio::test]
async fn successive_full_versions_of_one_image_in_a_batch_cost_one_statement() {
    let repo = repository(WritePath::Auto).await;
    let mut v1 = created(20);
    v1["updated_at"] = json!("2023-10-09T10:00:00");
    v1["disease"] = json!("Healthy");
    let mut v2 = v1.clone();
    v2["updated_at"] = json!("2023-10-09T11:00:00");
    v2["disease"] = json!("Late blight");
    let outcomes = repo
        .apply(&[write(&created(20)), write(&v1), write(&v2)])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            WriteOutcome::Collapsed,
            WriteOutcome::Collapsed,
            WriteOutcome::Inserted
        ]
    );
    let doc = stored(&repo, 20).await;
    let mut expected = v2;
    expected["created_at"] = json!("2023-10-08T15:39:49.123000"); // BSON keeps milliseconds
    assert_eq!(
        image_json(&doc),
        expected,
        "the image is exactly the newest version"
    );
}

#[tokio::test]
async fn every_read_carries_the_time_limit_so_the_server_stops_scans_nobody_awaits() {
    use std::sync::{Arc, Mutex};

    use mongodb::event::{EventHandler, command::CommandEvent};

    let seen: Arc<Mutex<Vec<Document>>> = Arc::default();
    let mut options = mongodb::options::ClientOptions::parse(leafsync_test_support::mongo_uri())
        .await
        .unwrap();
    options.command_event_handler = Some(EventHandler::callback({
        let seen = Arc::clone(&seen);
        move |event| {
            if let CommandEvent::Started(started) = event {
                seen.lock().unwrap().push(started.command);
            }
        }
    }));
    let client = mongodb::Client::with_options(options).unwrap();
    let repo = ImageRepository::new(client, &unique_name("core"), WritePath::Auto)
        .with_read_time_limit(std::time::Duration::from_millis(2_500));
    repo.apply(&[write(&created(1))]).await.unwrap();
    let active = ImageFilter {
        is_active: Some(true),
        ..Default::default()
    };
    repo.find_by_id(COLL, 1).await.unwrap();
    repo.count(
        COLL,
        ImageFilter {
            include_deleted: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    repo.count(COLL, active).await.unwrap();
    repo.list(COLL, 0, 10, active).await.unwrap();
    repo.nth(COLL, active, 0).await.unwrap();

    let reads: Vec<Document> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            ["find", "count", "aggregate"]
                .iter()
                .any(|name| c.contains_key(*name))
        })
        .cloned()
        .collect();
    assert_eq!(reads.len(), 5, "{reads:#?}");
    for read in reads {
        let limit = read
            .get("maxTimeMS")
            .and_then(Bson::as_i64)
            .or_else(|| read.get("maxTimeMS").and_then(Bson::as_i32).map(i64::from));
        assert_eq!(limit, Some(2_500), "{read}");
    }
}

/// A repository whose collection refuses `disease: "poison"` (a real validator: the
/// server's own document-level refusal, code 121).
async fn repository_with_a_validator(path: WritePath) -> ImageRepository {
    let client = mongo_client().await;
    let db = client.database(&unique_name("core"));
    db.create_collection(COLL)
        .validator(mongodb::bson::doc! { "disease": { "$ne": "poison" } })
        .await
        .expect("a collection with a validator");
    let repo = ImageRepository::new(client, db.name(), path);
    repo.ensure_indexes(&[COLL]).await.unwrap();
    repo
}

fn full(disease: &str, active: bool, at: &str) -> Value {
    json!({"id": 8, "camera_id": 1, "is_active": active, "disease": disease, "updated_at": at})
}

async fn a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused(
    path: WritePath,
) {
    let repo = repository_with_a_validator(path).await;
    repo.apply(&[write(&created(8))]).await.unwrap();
    // v1 collapses into v2, which sets every field again; v2 is refused.
    let v1 = full("Healthy", true, "2023-10-09T10:00:00");
    let v2 = full("poison", true, "2023-10-09T11:00:00");
    let outcomes = repo.apply(&[write(&v1), write(&v2)]).await.unwrap();
    assert_eq!(
        outcomes[0],
        WriteOutcome::Updated,
        "v1 is applied after all"
    );
    assert!(
        matches!(&outcomes[1], WriteOutcome::Rejected { code: 121, .. }),
        "{outcomes:?}"
    );
    let doc = stored(&repo, 8).await;
    assert_eq!(doc.get_str("disease").unwrap(), "Healthy", "at v1, not v0");
    // v3 collapses into v4 ∪ v5; v4 is stored, v5 refused: v3 can no longer be stored in
    // order (v4 is newer), so it is refused with v5, never silently dropped.
    let v3 = json!({"id": 8, "is_active": false, "disease": "Leaf mold", "updated_at": "2023-10-09T12:00:00"});
    let v4 = json!({"id": 8, "is_active": true, "updated_at": "2023-10-09T13:00:00"});
    let v5 = json!({"id": 8, "disease": "poison", "updated_at": "2023-10-09T14:00:00"});
    let outcomes = repo
        .apply(&[write(&v3), write(&v4), write(&v5)])
        .await
        .unwrap();
    assert!(
        matches!(&outcomes[0], WriteOutcome::Rejected { code: 121, message } if message.contains("collapsed into a later version")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], WriteOutcome::Updated);
    assert!(matches!(
        &outcomes[2],
        WriteOutcome::Rejected { code: 121, .. }
    ));
    let doc = stored(&repo, 8).await;
    assert!(doc.get_bool("is_active").unwrap());
    assert_eq!(doc.get_str("disease").unwrap(), "Healthy");
}

#[tokio::test]
async fn a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused_with_the_default_path()
 {
    a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused(WritePath::Auto)
        .await;
}

#[tokio::test]
async fn a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused_with_bulk_write()
 {
    a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused(
        WritePath::BulkWrite,
    )
    .await;
}

/// A duplicate key on a unique index other than `id`'s is the document's collision with
/// another image, never a stale event.
#[tokio::test]
async fn a_duplicate_on_another_unique_index_is_named_and_never_stale() {
    for path in [
        WritePath::Auto,
        WritePath::BulkWrite,
        WritePath::UpdateCommand,
    ] {
        let repo = repository(path).await;
        repo.database()
            .collection::<Document>(COLL)
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(mongodb::bson::doc! { "label": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .unique(true)
                            .sparse(true)
                            .build(),
                    )
                    .build(),
            )
            .await
            .unwrap();
        let labelled = |id: i64, at: Value| json!({"id": id, "label": "x", "updated_at": at});
        let outcomes = repo
            .apply(&[
                write(&labelled(1, Value::Null)),
                write(&labelled(2, Value::Null)),
                write(&labelled(3, json!("2023-10-09T10:00:00"))),
            ])
            .await
            .unwrap();
        // Three images in one round, sent at once: whichever lands first takes the label.
        let inserted = outcomes
            .iter()
            .filter(|o| **o == WriteOutcome::Inserted)
            .count();
        assert_eq!(inserted, 1, "{path:?}: {outcomes:?}");
        for outcome in outcomes.iter().filter(|o| **o != WriteOutcome::Inserted) {
            assert!(
                matches!(outcome, WriteOutcome::Duplicate { index, .. } if index == "label_1"),
                "{path:?}: {outcomes:?}"
            );
        }
    }
}

#[tokio::test]
async fn replays_updates_and_stale_events_are_told_apart_with_the_update_command() {
    replays_updates_and_stale_events_are_told_apart(WritePath::UpdateCommand).await;
}

#[tokio::test]
async fn one_batch_keeps_each_images_events_in_order_with_the_update_command() {
    one_batch_keeps_each_images_events_in_order(WritePath::UpdateCommand).await;
}

#[tokio::test]
async fn a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only_with_the_update_command()
 {
    a_versioned_event_overwrites_null_missing_older_and_mistyped_versions_only(
        WritePath::UpdateCommand,
    )
    .await;
}

#[tokio::test]
async fn a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused_with_the_update_command()
 {
    a_collapsed_version_is_never_lost_when_the_version_that_covered_it_is_refused(
        WritePath::UpdateCommand,
    )
    .await;
}
