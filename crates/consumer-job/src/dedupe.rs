//! The way out when the consumer DB cannot get the unique index on `id` the stale guard
//! needs: an earlier writer (the batch synchronizer has no unique index) left several
//! images with one `id`, or a non-unique index on `id`. Reports, per collection, each
//! duplicated id and which copy is kept (the newest: the latest microsecond version, else
//! `updated_at`, else the latest `_id`); with `apply`, deletes the other copies and drops
//! a non-unique `id` index, so that consumer-job can build the unique one at its start.

use std::fmt;

use futures::TryStreamExt;
use mongodb::{
    Database,
    bson::{Bson, Document, doc},
};

use leafsync_core::{
    VERSION_FIELD,
    compare::{id_of, updated_millis},
};

/// One `id` stored more than once.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    /// The collection.
    pub collection: String,
    /// The duplicated image id.
    pub id: i64,
    /// The copy kept (its `_id`).
    pub keep: Bson,
    /// The copies removed (or to remove, in a report).
    pub remove: Vec<Bson>,
}

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{}: {} copies; keeping _id {}, removing {}",
            self.collection,
            self.id,
            self.remove.len() + 1,
            self.keep,
            self.remove
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// What a run found (and, with `apply`, did) in one collection.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Duplicated ids.
    pub duplicates: Vec<Duplicate>,
    /// Whether a non-unique index on `id` was found (and, with `apply`, dropped).
    pub non_unique_index: Option<String>,
}

/// How new a stored copy is: its microsecond version, else its `updated_at`, then `_id`.
fn newness(doc: &Document) -> (i64, i64, Bson) {
    let micros = doc.get_i64(VERSION_FIELD).unwrap_or(i64::MIN);
    let millis = updated_millis(doc).unwrap_or(i64::MIN);
    (
        micros,
        millis,
        doc.get("_id").cloned().unwrap_or(Bson::Null),
    )
}

fn bson_order(a: &Bson, b: &Bson) -> std::cmp::Ordering {
    match (a, b) {
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Finds (and with `apply` removes) duplicate ids and a non-unique `id` index in
/// `collection`.
pub async fn dedupe(
    db: &Database,
    collection: &str,
    apply: bool,
) -> mongodb::error::Result<Report> {
    let coll = db.collection::<Document>(collection);
    let mut report = Report::default();
    let mut indexes = coll.list_indexes().await?;
    while let Some(index) = indexes.try_next().await? {
        let on_id = index.keys.keys().map(String::as_str).eq(["id"]);
        let unique = index
            .options
            .as_ref()
            .and_then(|o| o.unique)
            .unwrap_or(false);
        if on_id && !unique {
            let name = index
                .options
                .as_ref()
                .and_then(|o| o.name.clone())
                .unwrap_or_else(|| "id_1".to_owned());
            report.non_unique_index = Some(name);
        }
    }
    let mut cursor = coll
        .find(doc! {})
        .projection(doc! { "_id": 1, "id": 1, "updated_at": 1, VERSION_FIELD: 1 })
        .sort(doc! { "id": 1 })
        .await?;
    let mut group: Vec<Document> = Vec::new();
    let mut flush = |group: &mut Vec<Document>| {
        if group.len() > 1 {
            group.sort_by(|a, b| {
                let (am, au, ai) = newness(a);
                let (bm, bu, bi) = newness(b);
                (am, au).cmp(&(bm, bu)).then_with(|| bson_order(&ai, &bi))
            });
            let keep = group.pop().expect("non-empty");
            report.duplicates.push(Duplicate {
                collection: collection.to_owned(),
                id: id_of(&keep).unwrap_or(-1),
                keep: keep.get("_id").cloned().unwrap_or(Bson::Null),
                remove: group.iter().filter_map(|d| d.get("_id").cloned()).collect(),
            });
        }
        group.clear();
    };
    while let Some(doc) = cursor.try_next().await? {
        if group.last().is_some_and(|last| id_of(last) != id_of(&doc)) {
            flush(&mut group);
        }
        group.push(doc);
    }
    flush(&mut group);
    if apply {
        for duplicate in &report.duplicates {
            coll.delete_many(doc! { "_id": { "$in": duplicate.remove.clone() } })
                .await?;
        }
        if let Some(name) = &report.non_unique_index {
            coll.drop_index(name.as_str()).await?;
        }
    }
    Ok(report)
}
