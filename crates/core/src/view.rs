//! The way back out: a stored image document rendered as the Image API renders it, so a
//! client cannot tell the consumer DB's API from the producer's.
//!
//! `data` becomes a hex string, dates become naive ISO strings as Python's
//! `datetime.isoformat()` prints them, `_id` and the job's [`VERSION_FIELD`] are dropped,
//! everything else is relaxed extended JSON.

use mongodb::bson::{Bson, Document};

use crate::event::VERSION_FIELD;
use serde_json::{Map, Value};

/// The Image API model's fields, in its order; a response lists them first.
const MODEL_ORDER: [&str; 10] = [
    "id",
    "camera_id",
    "data",
    "gps_coordinates",
    "created_at",
    "updated_at",
    "is_active",
    "is_deleted",
    "disease",
    "percentage",
];

/// Renders one stored image as the Image API renders it: the model's fields in the
/// model's order (whatever order the upserts left them in), then any extra fields.
pub fn image_json(doc: &Document) -> Value {
    let mut out = Map::new();
    for key in MODEL_ORDER {
        if let Some(value) = doc.get(key) {
            out.insert(key.to_owned(), bson_json(value));
        }
    }
    for (key, value) in doc {
        if key != "_id" && key != VERSION_FIELD && !MODEL_ORDER.contains(&key.as_str()) {
            out.insert(key.clone(), bson_json(value));
        }
    }
    Value::Object(out)
}

fn bson_json(value: &Bson) -> Value {
    match value {
        Bson::Binary(bin) => Value::String(hex::encode(&bin.bytes)),
        Bson::DateTime(at) => Value::String(python_isoformat(*at)),
        Bson::Array(items) => Value::Array(items.iter().map(bson_json).collect()),
        Bson::Document(doc) => {
            Value::Object(doc.iter().map(|(k, v)| (k.clone(), bson_json(v))).collect())
        }
        other => other.clone().into_relaxed_extjson(),
    }
}

/// `2023-10-08T15:39:49.123000`, or without the fraction when it is zero, like Python.
pub fn python_isoformat(at: mongodb::bson::DateTime) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(at.timestamp_millis())
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    if dt.timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageChange;
    use serde_json::json;

    #[test]
    fn an_image_renders_back_to_the_json_it_came_from() {
        let event = json!({
            "id": 7, "camera_id": 2, "data": "ffd8ffe0",
            "gps_coordinates": [48.47, 16.5], "created_at": "2023-10-08T15:39:49.123000",
            "updated_at": "2023-10-09T19:05:14", "is_active": false, "is_deleted": false,
            "disease": "Healthy", "percentage": 0.995,
        });
        let change = ImageChange::from_json_slice(event.to_string().as_bytes()).unwrap();
        let mut stored = change.set.clone();
        stored.insert("_id", mongodb::bson::oid::ObjectId::new());
        assert_eq!(image_json(&stored), event);
        // Upserts may store fields in another order; the response keeps the model's.
        let mut reordered =
            mongodb::bson::doc! { "updated_at": stored.get("updated_at").cloned(), "extra": 1 };
        reordered.extend(stored);
        let keys: Vec<String> = image_json(&reordered)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys[..3], ["id", "camera_id", "data"]);
        assert_eq!(keys[5], "updated_at");
        assert_eq!(keys.last().unwrap(), "extra");
    }
}
