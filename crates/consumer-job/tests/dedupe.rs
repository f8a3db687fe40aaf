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
