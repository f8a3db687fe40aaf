//! `dedupe` against a real MongoDB wire server: a consumer DB written without a unique
//! index (as the batch synchronizer writes it) blocks the index the stale guard needs,
//! with an error that names the way out; `dedupe` reports, then keeps the newest copy.

use consumer_job::dedupe::dedupe;
use leafsync_core::{ImageRepository, WritePath};
use leafsync_test_support::{mongo_client, unique_name};
use mongodb::{
    IndexModel,
    bson::{Bson, DateTime, Document, doc},
};

const WITH_INDEX: &str = "imagecolplantpotato";
const WITHOUT_INDEX: &str = "imagecolplanttomato";

fn copy(id: i32, millis: Option<i64>, disease: &str) -> Document {
    doc! {
        "id": id,
        "updated_at": millis.map_or(Bson::Null, |m| Bson::DateTime(DateTime::from_millis(m))),
        "disease": disease,
    }
}

#[tokio::test]
async fn duplicate_ids_hold_the_unique_index_until_dedupe_keeps_the_newest_copy() {
    let client = mongo_client().await;
    let db = client.database(&unique_name("dedupe"));
    let indexed = db.collection::<Document>(WITH_INDEX);
    indexed
        .create_index(IndexModel::builder().keys(doc! { "id": 1 }).build())
        .await
        .expect("a non-unique index on id");
    for c in [WITH_INDEX, WITHOUT_INDEX] {
        db.collection::<Document>(c)
            .insert_many([
                copy(1, Some(1_000), "older"),
                copy(1, Some(2_000), "newest"),
                copy(1, None, "never updated"),
                copy(2, None, "alone"),
            ])
            .await
            .expect("seed");
    }
    let repo = ImageRepository::new(client.clone(), db.name(), WritePath::Auto);

    for c in [WITH_INDEX, WITHOUT_INDEX] {
        let err = repo
            .ensure_indexes(&[c])
            .await
            .expect_err("no unique index over duplicates");
        assert!(!err.is_retriable(), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(c) && message.contains("dedupe"),
            "{message}"
        );
    }

    let report = dedupe(&db, WITH_INDEX, false).await.expect("report");
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!(report.duplicates[0].id, 1);
    assert_eq!(report.duplicates[0].remove.len(), 2);
    assert!(report.non_unique_index.is_some(), "{report:?}");
    assert_eq!(
        indexed.count_documents(doc! {}).await.unwrap(),
        4,
        "a report changes nothing"
    );

    for c in [WITH_INDEX, WITHOUT_INDEX] {
        dedupe(&db, c, true).await.expect("apply");
        let coll = db.collection::<Document>(c);
        assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 2, "{c}");
        let one = coll
            .find_one(doc! { "id": 1 })
            .await
            .unwrap()
            .expect("image 1");
        assert_eq!(one.get_str("disease").unwrap(), "newest", "{c}");
    }
    repo.ensure_indexes(&[WITH_INDEX, WITHOUT_INDEX])
        .await
        .expect("the unique index builds once the duplicates are gone");
    let again = dedupe(&db, WITH_INDEX, false).await.expect("report");
    assert!(
        again.duplicates.is_empty() && again.non_unique_index.is_none(),
        "{again:?}"
    );
}

/// Documents whose `id` is not an integer are never grouped (two doubles equal to each
/// other are not known to be one image) and never deleted: they are listed.
#[tokio::test]
async fn ids_that_are_not_integers_are_listed_and_never_grouped_or_deleted() {
    let client = mongo_client().await;
    let db = client.database(&unique_name("dedupe"));
    let coll = db.collection::<Document>(WITHOUT_INDEX);
    coll.insert_many([
        doc! { "id": 1.0, "disease": "a" },
        doc! { "id": 2.0, "disease": "b" },
        doc! { "id": 2.0, "disease": "c" },
        doc! { "id": "2", "disease": "d" },
        doc! { "disease": "no id" },
        doc! { "id": 3, "disease": "e" },
    ])
    .await
    .expect("seed");
    let report = dedupe(&db, WITHOUT_INDEX, true).await.expect("apply");
    assert!(report.duplicates.is_empty(), "{report:?}");
    assert_eq!(report.unresolved.len(), 5, "{report:?}");
    assert!(
        report.unresolved[0]
            .to_string()
            .contains("left for you to decide"),
        "{}",
        report.unresolved[0]
    );
    assert_eq!(
        coll.count_documents(doc! {}).await.unwrap(),
        6,
        "nothing deleted"
    );
}

/// The newer copy is the one with the later `updated_at`; the microsecond version only
/// breaks a tie within a millisecond, and only when both copies carry it.
#[tokio::test]
async fn the_copy_kept_is_the_later_updated_at_and_the_microsecond_version_only_breaks_ties() {
    let client = mongo_client().await;
    let db = client.database(&unique_name("dedupe"));
    let coll = db.collection::<Document>(WITHOUT_INDEX);
    let at = |ms: i64| Bson::DateTime(DateTime::from_millis(ms));
    coll.insert_many([
        // #1: the later updated_at wins over a µs version only the older copy has.
        doc! { "id": 1, "updated_at": at(2_000), "disease": "newest" },
        doc! { "id": 1, "updated_at": at(1_000), "_updated_at_us": 1_000_999_i64, "disease": "older" },
        // #2: the same millisecond: the later µs version wins.
        doc! { "id": 2, "updated_at": at(1_000), "_updated_at_us": 1_000_700_i64, "disease": "newest" },
        doc! { "id": 2, "updated_at": at(1_000), "_updated_at_us": 1_000_200_i64, "disease": "older" },
        // #3: Int32 and Int64 of one value are one image.
        doc! { "id": 3_i64, "updated_at": at(5_000), "disease": "newest" },
        doc! { "id": 3, "updated_at": Bson::Null, "disease": "older" },
    ])
    .await
    .expect("seed");
    let report = dedupe(&db, WITHOUT_INDEX, true).await.expect("apply");
    assert_eq!(report.duplicates.len(), 3, "{report:?}");
    for id in [1, 2, 3] {
        let kept = coll
            .find_one(doc! { "id": id })
            .await
            .unwrap()
            .expect("a copy is kept");
        assert_eq!(kept.get_str("disease").unwrap(), "newest", "#{id}");
    }
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 3);
}
