//! The way out when the consumer DB cannot get the unique index on `id` the stale guard
//! needs: an earlier writer (the batch synchronizer has no unique index) left several
//! images with one `id`, or a non-unique index on `id`. Reports, per collection, each
//! duplicated id and which copy is kept (the newest: the latest `updated_at`, then the
//! microsecond version where both copies have one, then the latest `_id`); with `apply`,
//! deletes the other copies and drops a non-unique `id` index, so that consumer-job can
//! build the unique one at its start.
//!
//! Only integer ids (Int32, Int64, compared by value) are grouped. A document whose `id`
//! is anything else (a double, a string, missing) is listed for a person to decide and
//! never deleted: two such documents are not known to be one image.

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

/// A document whose `id` is not an integer: never grouped, never deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// The collection.
    pub collection: String,
    /// Its `_id`.
    pub doc: Bson,
    /// Its `id` as stored (`None`: no `id` at all).
    pub id: Option<Bson>,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.id.as_ref().map_or_else(
            || "no id".to_owned(),
            |id| format!("id {id} ({:?})", id.element_type()),
        );
        write!(
            f,
            "{}: _id {} has {id}, not an integer: left for you to decide",
            self.collection, self.doc
        )
    }
}

/// What a run found (and, with `apply`, did) in one collection.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Duplicated ids.
    pub duplicates: Vec<Duplicate>,
    /// Documents whose `id` is not an integer (listed, never touched).
    pub unresolved: Vec<Unresolved>,
    /// Whether a non-unique index on `id` was found (and, with `apply`, dropped).
    pub non_unique_index: Option<String>,
}

/// Which of two copies of one image is newer: the later `updated_at` (a date beats none),
/// then, only when both carry it, the later microsecond version (it breaks ties within
/// a millisecond), then the later `_id`.
fn newer(a: &Document, b: &Document) -> std::cmp::Ordering {
    let micros = |d: &Document| d.get_i64(VERSION_FIELD).ok();
    updated_millis(a)
        .cmp(&updated_millis(b))
        .then_with(|| match (micros(a), micros(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => std::cmp::Ordering::Equal,
        })
        .then_with(|| bson_order(a.get("_id"), b.get("_id")))
}

fn bson_order(a: Option<&Bson>, b: Option<&Bson>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(Bson::ObjectId(x)), Some(Bson::ObjectId(y))) => x.cmp(y),
        _ => format!("{a:?}").cmp(&format!("{b:?}")),
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
    let mut indexes = match coll.list_indexes().await {
        Ok(indexes) => indexes,
        // NamespaceNotFound: a collection nothing wrote yet holds nothing to repair.
        Err(e) if leafsync_core::mongo::error_code(&e) == Some(26) => return Ok(report),
        Err(e) => return Err(e),
    };
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
    // Sorted by `id`, so one image's copies are adjacent (Int32 and Int64 of one value
    // too: the server orders numbers by value).
    let mut group: Vec<Document> = Vec::new();
    let mut group_id: Option<i64> = None;
    let mut flush = |group: &mut Vec<Document>, id: Option<i64>| {
        if let (Some(id), true) = (id, group.len() > 1) {
            group.sort_by(newer);
            let keep = group.pop().expect("non-empty");
            report.duplicates.push(Duplicate {
                collection: collection.to_owned(),
                id,
                keep: keep.get("_id").cloned().unwrap_or(Bson::Null),
                remove: group.iter().filter_map(|d| d.get("_id").cloned()).collect(),
            });
        }
        group.clear();
    };
    let mut unresolved = Vec::new();
    while let Some(doc) = cursor.try_next().await? {
        let Some(id) = id_of(&doc) else {
            unresolved.push(Unresolved {
                collection: collection.to_owned(),
                doc: doc.get("_id").cloned().unwrap_or(Bson::Null),
                id: doc.get("id").cloned(),
            });
            continue;
        };
        if group_id != Some(id) {
            flush(&mut group, group_id);
            group_id = Some(id);
        }
        group.push(doc);
    }
    flush(&mut group, group_id);
    report.unresolved = unresolved;
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
