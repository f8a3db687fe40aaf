//! One LIMS leaf image, in its two shapes: the producer DB document (built here with the
//! types pymongo writes, independently of leafsync's event parser, so `verify` really
//! compares two paths) and the Image API's JSON event.

use chrono::{DateTime, Utc};
use leafsync_core::PlantType;
use mongodb::bson::{self, Bson, Document, spec::BinarySubtype};
use serde_json::{Value, json};

/// The state of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Its plant (topic and collection).
    pub plant: PlantType,
    /// Sequential per plant, from 1.
    pub id: i32,
    /// 1..=4, the camera jobs.
    pub camera_id: i32,
    /// JPEG bytes.
    pub data: Vec<u8>,
    /// Latitude, longitude.
    pub gps: [f64; 2],
    /// Millisecond precision, UTC (BSON dates hold milliseconds).
    pub created_at: DateTime<Utc>,
    /// Set by every update.
    pub updated_at: Option<DateTime<Utc>>,
    /// Users job toggles it.
    pub is_active: bool,
    /// Soft delete.
    pub is_deleted: bool,
    /// Disease recognizer's verdict.
    pub disease: Option<String>,
    /// Its confidence.
    pub percentage: Option<f64>,
}

fn bson_date(at: DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_millis(at.timestamp_millis()))
}

/// `datetime.isoformat()` of a naive UTC datetime, as the Image API prints it.
fn iso(at: DateTime<Utc>) -> String {
    leafsync_core::view::python_isoformat(bson::DateTime::from_millis(at.timestamp_millis()))
}

impl Image {
    /// The producer DB document (without `_id`).
    pub fn document(&self) -> Document {
        bson::doc! {
            "id": self.id,
            "camera_id": self.camera_id,
            "data": bson::Binary { subtype: BinarySubtype::Generic, bytes: self.data.clone() },
            "gps_coordinates": [self.gps[0], self.gps[1]],
            "created_at": bson_date(self.created_at),
            "updated_at": self.updated_at.map_or(Bson::Null, bson_date),
            "is_active": self.is_active,
            "is_deleted": self.is_deleted,
            "disease": self.disease.clone().map_or(Bson::Null, Bson::String),
            "percentage": self.percentage.map_or(Bson::Null, Bson::Double),
        }
    }

    /// The Image API's event for this state.
    pub fn event(&self) -> Value {
        json!({
            "id": self.id,
            "camera_id": self.camera_id,
            "data": hex::encode(&self.data),
            "gps_coordinates": self.gps,
            "created_at": iso(self.created_at),
            "updated_at": self.updated_at.map(iso),
            "is_active": self.is_active,
            "is_deleted": self.is_deleted,
            "disease": self.disease,
            "percentage": self.percentage,
        })
    }

    /// Marks an update at `now`, strictly after the previous one (events must be ordered
    /// by `updated_at`, and BSON dates only hold milliseconds).
    pub fn touch(&mut self, now: DateTime<Utc>) {
        let floor = self.updated_at.unwrap_or(self.created_at) + chrono::Duration::milliseconds(1);
        self.updated_at = Some(now.max(floor));
    }
}
