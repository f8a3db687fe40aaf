//! The parsers of single fields, liberal in what they accept as long as the meaning is
//! unambiguous, each failing with the [`EventError`] that names the field.

use chrono::{DateTime, NaiveDateTime, Utc};
use mongodb::bson::{self, Bson, spec::BinarySubtype};
use serde_json::{Number, Value};

use super::{EventError, int_bson};
use crate::id::ImageId;

pub(super) fn nullable(
    value: Value,
    parse: impl FnOnce(Value) -> Result<Bson, EventError>,
) -> Result<Bson, EventError> {
    match value {
        Value::Null => Ok(Bson::Null),
        other => parse(other),
    }
}

pub(super) fn parse_id(value: &Value) -> Result<ImageId, EventError> {
    parse_int("id", value)
        .ok()
        .and_then(ImageId::new)
        .ok_or_else(|| EventError::InvalidId(brief(value)))
}

/// Integers as JSON numbers, integral floats (`3.0`) and decimal strings (`"3"`) are taken:
/// be liberal in what you accept, as long as the meaning is unambiguous.
pub(super) fn parse_int(field: &str, value: &Value) -> Result<i64, EventError> {
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| {
                    #[allow(clippy::cast_possible_truncation)] // integral and in range
                    let i = f as i64;
                    i
                })
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| wrong_type(field, "an integer", value))
}

pub(super) fn parse_hex(value: Value) -> Result<Bson, EventError> {
    let Value::String(text) = value else {
        return Err(wrong_type("data", "a hex string", &value));
    };
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    let bytes = hex::decode(digits).map_err(|e| EventError::InvalidHex {
        field: "data",
        detail: e.to_string(),
    })?;
    Ok(Bson::Binary(bson::Binary {
        subtype: BinarySubtype::Generic,
        bytes,
    }))
}

pub(super) fn parse_coordinates(value: Value) -> Result<Bson, EventError> {
    let Value::Array(items) = value else {
        return Err(wrong_type("gps_coordinates", "an array of numbers", &value));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Number(n) => Ok(Bson::Double(number_to_f64(&n))),
            other => Err(wrong_type("gps_coordinates", "an array of numbers", &other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Bson::Array)
}

/// A BSON date (milliseconds, truncated as pymongo does) from microseconds since the epoch.
pub(super) fn bson_date(micros: i64) -> bson::DateTime {
    bson::DateTime::from_millis(micros.div_euclid(1000))
}

/// Naive ISO strings (what Python's `datetime.isoformat()` gives) are UTC; strings with an
/// offset or `Z` are converted to UTC. The result is microseconds since the epoch (Python's
/// precision); [`bson_date`] truncates it to what a BSON date holds.
pub(super) fn parse_date(field: &'static str, value: &Value) -> Result<i64, EventError> {
    let Value::String(text) = value else {
        return Err(wrong_type(field, "an ISO-8601 date-time string", value));
    };
    let text = text.trim();
    let utc = DateTime::parse_from_rfc3339(text)
        .map(|dt| dt.with_timezone(&Utc))
        .or_else(|_| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
                .map(|naive| naive.and_utc())
                .ok_or(())
        })
        .map_err(|()| EventError::InvalidDate {
            field,
            value: text.chars().take(64).collect(),
        })?;
    Ok(utc.timestamp_micros())
}

pub(super) fn extra_field(key: &str, value: Value) -> Result<Bson, EventError> {
    if key.is_empty() || key.starts_with('$') || key.contains('.') || key.contains('\0') {
        return Err(EventError::InvalidFieldName(key.chars().take(64).collect()));
    }
    // Integers keep pymongo's Int32/Int64 choice; everything else as extended JSON decodes.
    if let Value::Number(n) = &value {
        if let Some(i) = n.as_i64() {
            return Ok(int_bson(i));
        }
    }
    Bson::try_from(value).map_err(|e| EventError::WrongType {
        field: key.chars().take(64).collect(),
        expected: "a value MongoDB can store",
        got: e.to_string(),
    })
}

pub(super) fn number_to_f64(n: &Number) -> f64 {
    // serde_json numbers without arbitrary precision always have an f64 view.
    n.as_f64().unwrap_or(f64::NAN)
}

pub(super) fn wrong_type(field: &str, expected: &'static str, got: &Value) -> EventError {
    EventError::WrongType {
        field: field.to_owned(),
        expected,
        got: brief(got),
    }
}

pub(super) fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 64 {
        format!("{}…", text.chars().take(64).collect::<String>())
    } else {
        text
    }
}
