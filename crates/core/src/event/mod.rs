//! The boundary between Kafka and MongoDB: an Image API event (JSON) becomes an
//! [`ImageChange`], i.e. the `$set` document with the producer DB's BSON types and the
//! version that orders it against what is already stored.
//!
//! Everything the rest of the pipeline relies on is checked here, once: the `id` is an
//! integer, `data` is hex, dates are dates. A value that fails is an [`EventError`], which
//! the job dead-letters, its variant the machine-readable cause.
//!
//! Types follow what pymongo writes into the producer DB, because the Db Synchronizer and
//! our `verify` compare against it: integers are Int32 when they fit (else Int64), `data`
//! is Binary subtype 0, dates are BSON Date (UTC, millisecond precision), floats are
//! Double, nulls stay null, unknown fields are kept (as extended JSON would decode them).

mod error;
mod fields;

pub use error::EventError;

use mongodb::bson::{self, Bson, Document};
use serde_json::{Map, Value};

use crate::ImageId;

use fields::{
    bson_date, extra_field, nullable, number_to_f64, parse_coordinates, parse_date, parse_hex,
    parse_id, parse_int, wrong_type,
};

/// One event, ready to be written: which image, what to `$set`, and how it is ordered.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageChange {
    /// The image's LIMS id (unique per plant collection).
    pub id: ImageId,
    /// Where this event stands in the image's history; see [`Version`].
    pub version: Version,
    /// The fields present in the event, converted to BSON, `id` included.
    pub set: Document,
}

/// The field beside each image that holds its `updated_at` to the microsecond (Int64 µs
/// since the epoch). BSON dates keep milliseconds, so two updates of one image within the
/// same millisecond would look equal without it. Only the job writes it; the API never
/// shows it, and `verify` ignores it.
pub const VERSION_FIELD: &str = "_updated_at_us";

/// How an event is ordered against the stored document, from its `updated_at`.
///
/// The rule: an event is applied only if it is not older than what is stored, with a
/// missing/null stored `updated_at` counting as "never updated" (the oldest state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The event has no `updated_at` key at all (a partial update): it cannot be ordered,
    /// so it is applied as it comes (last writer in partition order wins).
    Unversioned,
    /// `updated_at: null`: the image as created, never updated. It must not overwrite an
    /// image that has since been updated (a replayed create event).
    Initial,
    /// `updated_at` at this instant, in microseconds since the epoch: applied only over a
    /// stored image whose `updated_at` (and [`VERSION_FIELD`]) is null, missing, or not
    /// later.
    At(i64),
}

impl ImageChange {
    /// Parses a record value (the Image API's JSON) into a change.
    pub fn from_json_slice(value: &[u8]) -> Result<Self, EventError> {
        match serde_json::from_slice::<Value>(value)? {
            Value::Object(map) => Self::from_json_object(map),
            _ => Err(EventError::NotAnObject),
        }
    }

    /// Converts an already-decoded JSON object into a change.
    pub fn from_json_object(map: Map<String, Value>) -> Result<Self, EventError> {
        let id = match map.get("id") {
            None | Some(Value::Null) => return Err(EventError::MissingId),
            Some(value) => parse_id(value)?,
        };
        let mut version = Version::Unversioned;
        let mut set = Document::new();
        for (key, value) in map {
            let bson = match key.as_str() {
                // The consumer's `_id` is its own ObjectId, as in the batch synchronizer;
                // the version field is ours, derived from `updated_at` below.
                "_id" | VERSION_FIELD => continue,
                "id" => int_bson(id.get()),
                "camera_id" => nullable(value, |v| parse_int("camera_id", &v).map(int_bson))?,
                "data" => nullable(value, parse_hex)?,
                "gps_coordinates" => nullable(value, parse_coordinates)?,
                "created_at" => nullable(value, |v| {
                    parse_date("created_at", &v).map(|at| Bson::DateTime(bson_date(at)))
                })?,
                "updated_at" => {
                    let micros = match value {
                        Value::Null => None,
                        v => Some(parse_date("updated_at", &v)?),
                    };
                    version = micros.map_or(Version::Initial, Version::At);
                    micros.map_or(Bson::Null, |at| Bson::DateTime(bson_date(at)))
                }
                "is_active" | "is_deleted" => nullable(value, |v| match v {
                    Value::Bool(b) => Ok(Bson::Boolean(b)),
                    other => Err(wrong_type(&key, "a boolean", &other)),
                })?,
                "disease" => nullable(value, |v| match v {
                    Value::String(s) => Ok(Bson::String(s)),
                    other => Err(wrong_type(&key, "a string", &other)),
                })?,
                "percentage" => nullable(value, |v| match v {
                    Value::Number(n) => Ok(Bson::Double(number_to_f64(&n))),
                    other => Err(wrong_type(&key, "a number", &other)),
                })?,
                _ => extra_field(&key, value)?,
            };
            set.insert(key, bson);
        }
        Ok(ImageChange { id, version, set })
    }

    /// The `updated_at` of this event, if it carries one.
    pub fn updated_at(&self) -> Option<bson::DateTime> {
        match self.version {
            Version::At(micros) => Some(bson_date(micros)),
            Version::Initial | Version::Unversioned => None,
        }
    }

    /// The newest timestamp the event carries (`updated_at`, else `created_at`): how old the
    /// change is, for the end-to-end lag metric.
    pub fn event_time(&self) -> Option<bson::DateTime> {
        self.updated_at()
            .or_else(|| self.set.get_datetime("created_at").ok().copied())
    }

    /// The filter that finds the stored image only if this event may overwrite it.
    ///
    /// Used with `upsert: true` and a unique index on `id`: when the image exists but is
    /// newer, the filter matches nothing, the upsert tries to insert a second `id` and the
    /// server answers E11000, which the repository reports as [`crate::WriteOutcome::Stale`].
    pub fn guard_filter(&self) -> Document {
        let id = int_bson(self.id.get());
        match self.version {
            Version::Unversioned => bson::doc! { "id": id },
            Version::Initial => bson::doc! { "id": id, "updated_at": Bson::Null },
            // One predicate per field, no `$or`: `$not: {$gt}` also matches null, missing
            // and non-date values, and keeps the filter on the `id` index in every planner.
            Version::At(micros) => bson::doc! {
                "id": id,
                "updated_at": { "$not": { "$gt": bson_date(micros) } },
                VERSION_FIELD: { "$not": { "$gt": micros } },
            },
        }
    }

    /// [`Self::guard_filter`] for a first try: a versioned event matches only a stored
    /// version strictly older than its own (or none), so a matched statement is known to
    /// change the image (its version field at least). An equal version, a replay, then
    /// collides like an older one and is retried under the plain guard.
    pub fn strict_guard_filter(&self) -> Document {
        match self.version {
            Version::At(micros) => bson::doc! {
                "id": int_bson(self.id.get()),
                "updated_at": { "$not": { "$gt": bson_date(micros) } },
                VERSION_FIELD: { "$not": { "$gte": micros } },
            },
            Version::Initial | Version::Unversioned => self.guard_filter(),
        }
    }

    /// The update document: `$set` of exactly the fields the event carried, and for a
    /// versioned event its microsecond version ([`VERSION_FIELD`]).
    pub fn update(&self) -> Document {
        let mut set = self.set.clone();
        if let Version::At(micros) = self.version {
            set.insert(VERSION_FIELD, micros);
        }
        bson::doc! { "$set": set }
    }
}

/// pymongo stores a Python int as Int32 when it fits, else Int64; so do we.
pub fn int_bson(value: i64) -> Bson {
    i32::try_from(value).map_or(Bson::Int64(value), Bson::Int32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::spec::BinarySubtype;
    use serde_json::json;

    fn change(value: &Value) -> Result<ImageChange, EventError> {
        ImageChange::from_json_slice(value.to_string().as_bytes())
    }

    fn full_event() -> Value {
        json!({
            "id": 7, "camera_id": 2, "data": "ffd8ffe0",
            "gps_coordinates": [48.47, 16], "created_at": "2023-10-08T15:39:49.123123",
            "updated_at": null, "is_active": false, "is_deleted": false,
            "disease": null, "percentage": null,
        })
    }

    #[test]
    fn a_full_create_event_gets_the_producer_db_types() {
        let c = change(&full_event()).unwrap();
        assert_eq!(c.id.get(), 7);
        assert_eq!(c.version, Version::Initial);
        assert_eq!(c.set.get("id"), Some(&Bson::Int32(7)));
        assert_eq!(c.set.get("camera_id"), Some(&Bson::Int32(2)));
        let Some(Bson::Binary(bin)) = c.set.get("data") else {
            panic!("data is not binary: {:?}", c.set.get("data"))
        };
        assert_eq!(bin.subtype, BinarySubtype::Generic);
        assert_eq!(bin.bytes, vec![0xff, 0xd8, 0xff, 0xe0]);
        assert_eq!(
            c.set.get("gps_coordinates"),
            Some(&Bson::Array(vec![Bson::Double(48.47), Bson::Double(16.0)]))
        );
        let created = c.set.get_datetime("created_at").unwrap();
        assert_eq!(
            created.try_to_rfc3339_string().unwrap(),
            "2023-10-08T15:39:49.123Z"
        );
        assert_eq!(c.set.get("updated_at"), Some(&Bson::Null));
        assert_eq!(c.set.get("disease"), Some(&Bson::Null));
        assert_eq!(c.set.get("is_active"), Some(&Bson::Boolean(false)));
        assert_eq!(c.event_time(), Some(*created));
    }

    #[test]
    fn a_partial_update_sets_only_the_fields_it_carries() {
        let c = change(&json!({"id": 3, "disease": "Healthy", "percentage": 0.995})).unwrap();
        assert_eq!(c.version, Version::Unversioned);
        let keys: Vec<&str> = c.set.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "disease", "percentage"]);
        assert_eq!(c.guard_filter(), bson::doc! { "id": 3 });
    }

    #[test]
    fn an_updated_at_orders_the_event_and_guards_the_write() {
        let c = change(&json!({"id": 3, "updated_at": "2023-10-09T19:05:14.792000"})).unwrap();
        let Version::At(micros) = c.version else {
            panic!("not versioned")
        };
        assert_eq!(micros, 1_696_878_314_792_000);
        let at = c.updated_at().unwrap();
        assert_eq!(at.timestamp_millis(), 1_696_878_314_792);
        assert_eq!(
            c.guard_filter(),
            bson::doc! {
                "id": 3,
                "updated_at": { "$not": { "$gt": at } },
                VERSION_FIELD: { "$not": { "$gt": micros } },
            },
            "one predicate per field: no $or, which some planners scan for"
        );
        let mut set = c.set.clone();
        set.insert(VERSION_FIELD, micros);
        assert_eq!(c.update().get_document("$set").unwrap(), &set);
    }

    #[test]
    fn dates_with_offsets_spaces_or_z_are_converted_to_utc() {
        for text in [
            "2023-10-09T21:05:14.792+02:00",
            "2023-10-09T19:05:14.792Z",
            "2023-10-09 19:05:14.792",
        ] {
            let c = change(&json!({"id": 1, "updated_at": text})).unwrap();
            assert_eq!(
                c.updated_at().unwrap().timestamp_millis(),
                1_696_878_314_792,
                "{text}"
            );
        }
    }

    #[test]
    fn floats_parse_to_exactly_the_double_that_was_printed() {
        // serde_json's default float parser may be 1 ULP off; the workspace enables
        // `float_roundtrip` so coordinates equal the producer DB's doubles bit for bit.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            #[allow(clippy::cast_precision_loss)]
            let x = 48.0 + (state % 1_000_000_007) as f64 / 1_000_000_007.0;
            let c = change(&json!({"id": 1, "gps_coordinates": [x, x], "percentage": x})).unwrap();
            assert_eq!(
                c.set.get_f64("percentage").unwrap().to_bits(),
                x.to_bits(),
                "{x:?}"
            );
        }
    }

    #[test]
    fn liberal_ids_are_accepted_when_unambiguous() {
        assert_eq!(change(&json!({"id": "12"})).unwrap().id.get(), 12);
        assert_eq!(change(&json!({"id": 12.0})).unwrap().id.get(), 12);
        assert_eq!(
            change(&json!({"id": 5_000_000_000_i64}))
                .unwrap()
                .set
                .get("id"),
            Some(&Bson::Int64(5_000_000_000))
        );
    }

    #[test]
    fn unknown_fields_are_kept_and_underscore_id_is_dropped() {
        let c = change(&json!({"id": 1, "_id": "abc", "label": "x", "n": 3, "nested": {"a": [1]}}))
            .unwrap();
        assert!(!c.set.contains_key("_id"));
        assert_eq!(c.set.get_str("label").unwrap(), "x");
        assert_eq!(c.set.get("n"), Some(&Bson::Int32(3)));
        assert!(c.set.get_document("nested").is_ok());
    }

    /// The variant's name, kebab-cased as the job's dead-letter reason spells it.
    fn kind(e: &EventError) -> &'static str {
        match e {
            EventError::InvalidJson(_) => "invalid-json",
            EventError::NotAnObject => "not-an-object",
            EventError::MissingId => "missing-id",
            EventError::InvalidId(_) => "invalid-id",
            EventError::InvalidHex { .. } => "invalid-hex",
            EventError::InvalidDate { .. } => "invalid-date",
            EventError::WrongType { .. } => "wrong-type",
            EventError::InvalidFieldName(_) => "invalid-field-name",
        }
    }

    #[test]
    fn every_kind_of_bad_event_is_rejected_with_its_own_reason() {
        let cases: Vec<(&[u8], &str)> = vec![
            (b"{not json", "invalid-json"),
            (b"\xff\xfe", "invalid-json"),
            (b"[1,2]", "not-an-object"),
            (br#"{"camera_id": 1}"#, "missing-id"),
            (br#"{"id": null}"#, "missing-id"),
            (br#"{"id": "seven"}"#, "invalid-id"),
            (br#"{"id": 1.5}"#, "invalid-id"),
            (br#"{"id": -1}"#, "invalid-id"),
            (br#"{"id": 1, "data": "zz"}"#, "invalid-hex"),
            (br#"{"id": 1, "data": "abc"}"#, "invalid-hex"),
            (br#"{"id": 1, "created_at": "yesterday"}"#, "invalid-date"),
            (br#"{"id": 1, "updated_at": 12}"#, "wrong-type"),
            (br#"{"id": 1, "is_active": "yes"}"#, "wrong-type"),
            (br#"{"id": 1, "gps_coordinates": [1, "a"]}"#, "wrong-type"),
            (br#"{"id": 1, "percentage": "high"}"#, "wrong-type"),
            (br#"{"id": 1, "data": 5}"#, "wrong-type"),
            (br#"{"id": 1, "$set": {}}"#, "invalid-field-name"),
            (br#"{"id": 1, "a.b": 1}"#, "invalid-field-name"),
        ];
        for (bytes, reason) in cases {
            let err = ImageChange::from_json_slice(bytes).unwrap_err();
            assert_eq!(kind(&err), reason, "{}", String::from_utf8_lossy(bytes));
        }
    }
}
