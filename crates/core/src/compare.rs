//! One image in the producer DB against its copy in the consumer DB: the same fields, the
//! same BSON types, the same values (`_id` and our microsecond version aside: each DB has
//! its own `_id`, and the version is the consumer's). `reconcile` decides its repairs
//! with it, and the simulator's verification reports with it, so the two never disagree
//! about what "in sync" means.

use std::fmt;

use mongodb::bson::{Bson, Document, spec::ElementType};

use crate::VERSION_FIELD;

/// A document's integer `id` (Int32 or Int64, as pymongo stores it).
pub fn id_of(doc: &Document) -> Option<i64> {
    match doc.get("id")? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        _ => None,
    }
}

fn compared(key: &str) -> bool {
    key != "_id" && key != VERSION_FIELD
}

/// The first way a consumer copy differs from the producer's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A field of the producer's image is not in the copy.
    Missing(String),
    /// A field has another BSON type in the copy (a hex string for `data`, …).
    Type {
        /// The field.
        key: String,
        /// Its type in the consumer DB.
        consumer: ElementType,
        /// Its type in the producer DB.
        producer: ElementType,
    },
    /// A field has another value.
    Value(String),
    /// A field only the copy has.
    Extra(String),
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(key) => write!(f, "{key} is missing"),
            Difference::Type {
                key,
                consumer,
                producer,
            } => write!(
                f,
                "{key} is {consumer:?} in the consumer DB, {producer:?} in the producer DB"
            ),
            Difference::Value(key) => write!(f, "{key} differs"),
            Difference::Extra(key) => write!(f, "{key} is only in the consumer DB"),
        }
    }
}

/// The first way the consumer's copy differs from the producer's image, if any.
pub fn difference(producer: &Document, consumer: &Document) -> Option<Difference> {
    for (key, value) in producer.iter().filter(|(k, _)| compared(k)) {
        match consumer.get(key) {
            None => return Some(Difference::Missing(key.clone())),
            Some(other) if other.element_type() != value.element_type() => {
                return Some(Difference::Type {
                    key: key.clone(),
                    consumer: other.element_type(),
                    producer: value.element_type(),
                });
            }
            Some(other) if other != value => return Some(Difference::Value(key.clone())),
            Some(_) => {}
        }
    }
    consumer
        .keys()
        .find(|k| compared(k) && !producer.contains_key(*k))
        .map(|k| Difference::Extra(k.clone()))
}

/// Where an image stands between the two DBs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Same fields, types and values.
    InSync,
    /// Only in the producer DB.
    Missing,
    /// The consumer holds an older version, or the same version with other values.
    Stale(Difference),
    /// The consumer holds a field with another BSON type (a hex string for `data`, an ISO
    /// string for a date), at a version not newer than the producer's.
    Mistyped(Difference),
    /// The consumer's `updated_at` is later than the producer's: the stream got there
    /// first. Kept.
    ConsumerNewer,
    /// The consumer's `updated_at` is later than the producer's and later than the clock
    /// allows (now + the skew): a producer with a wrong clock, not a newer image. Left
    /// alone, it would refuse every real update; it is replaced by the producer's version
    /// even though that is older.
    Future(Difference),
}

/// A stored `updated_at` as milliseconds, when it is a BSON Date.
pub fn updated_millis(doc: &Document) -> Option<i64> {
    match doc.get("updated_at") {
        Some(Bson::DateTime(at)) => Some(at.timestamp_millis()),
        _ => None,
    }
}

/// Compares the producer's image with the consumer's copy (if any). `horizon` is the
/// latest `updated_at` (epoch milliseconds: now plus the allowed skew) a copy may carry
/// and still be a real version.
pub fn classify(producer: &Document, consumer: Option<&Document>, horizon: i64) -> Verdict {
    let Some(consumer) = consumer else {
        return Verdict::Missing;
    };
    let Some(why) = difference(producer, consumer) else {
        return Verdict::InSync;
    };
    let newer = match (updated_millis(consumer), updated_millis(producer)) {
        (Some(c), Some(p)) => c > p,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if newer && updated_millis(consumer).is_some_and(|c| c > horizon) {
        Verdict::Future(why)
    } else if newer {
        Verdict::ConsumerNewer
    } else if matches!(why, Difference::Type { .. }) {
        Verdict::Mistyped(why)
    } else {
        Verdict::Stale(why)
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{DateTime, doc};

    use super::*;

    #[test]
    fn types_values_and_field_sets_are_all_compared() {
        let base = doc! { "id": 1, "updated_at": Bson::Null, "disease": "Healthy" };
        assert_eq!(difference(&base, &base.clone()), None);
        let as_string = doc! { "id": 1, "updated_at": "2023-10-09T19:05:14", "disease": "Healthy" };
        assert!(
            difference(&base, &as_string)
                .unwrap()
                .to_string()
                .contains("updated_at is String")
        );
        let other_value = doc! { "id": 1, "updated_at": Bson::Null, "disease": "Leaf mold" };
        assert_eq!(
            difference(&base, &other_value).unwrap().to_string(),
            "disease differs"
        );
        let more = doc! { "id": 1, "updated_at": Bson::Null, "disease": "Healthy", "x": 1 };
        assert_eq!(
            difference(&base, &more).unwrap().to_string(),
            "x is only in the consumer DB"
        );
        let int64 = doc! { "id": 1_i64, "updated_at": Bson::Null, "disease": "Healthy" };
        assert!(
            difference(&base, &int64)
                .unwrap()
                .to_string()
                .contains("id is Int64")
        );
        let own = doc! { "_id": 7, "id": 1, "updated_at": Bson::Null, "disease": "Healthy", VERSION_FIELD: 5_i64 };
        assert_eq!(
            difference(&base, &own),
            None,
            "_id and our version are ours"
        );
    }

    #[test]
    fn verdicts_put_the_newer_side_first_then_types_then_values() {
        let at = |ms| Bson::DateTime(DateTime::from_millis(ms));
        let classify = |p: &Document, c: Option<&Document>| classify(p, c, 10_000);
        let producer = doc! { "id": 1, "updated_at": at(2_000), "disease": "Healthy" };
        assert_eq!(classify(&producer, None), Verdict::Missing);
        assert_eq!(
            classify(&producer, Some(&producer.clone())),
            Verdict::InSync
        );
        let older = doc! { "id": 1, "updated_at": at(1_000), "disease": Bson::Null };
        assert!(matches!(
            classify(&producer, Some(&older)),
            Verdict::Stale(_)
        ));
        let newer = doc! { "id": 1, "updated_at": at(3_000), "disease": "Leaf mold" };
        assert_eq!(classify(&producer, Some(&newer)), Verdict::ConsumerNewer);
        let hex = doc! { "id": 1, "updated_at": "1970-01-01T00:00:02", "disease": "Healthy" };
        assert!(matches!(
            classify(&producer, Some(&hex)),
            Verdict::Mistyped(_)
        ));
        let created = doc! { "id": 1, "updated_at": Bson::Null, "disease": Bson::Null };
        assert_eq!(
            classify(&created, Some(&older)),
            Verdict::ConsumerNewer,
            "updated in the consumer, never in the producer"
        );
        let future = doc! { "id": 1, "updated_at": at(10_001), "disease": "Leaf mold" };
        assert!(
            matches!(classify(&producer, Some(&future)), Verdict::Future(_)),
            "ahead of the producer and of the horizon"
        );
        assert_eq!(
            classify(
                &producer,
                Some(&doc! { "id": 1, "updated_at": at(10_000), "disease": "x" })
            ),
            Verdict::ConsumerNewer
        );
    }
}
