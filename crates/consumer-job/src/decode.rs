//! What to do with one Kafka record: apply it, dead-letter it (and why), or skip it by
//! policy. Pure: no I/O, so every poison case is a unit test.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use leafsync_core::{ImageChange, Version, Write};
use rdkafka::message::{Message, OwnedMessage};

use crate::config::{Route, Routes, TombstonePolicy};
pub use crate::dlq::{DeadLetter, DeadLetterReason, header};

/// The fate of a record.
#[derive(Debug)]
pub enum Decision {
    /// Upsert this into the consumer DB.
    Apply(Write),
    /// Send the record to the dead-letter topic.
    DeadLetter(DeadLetter),
    /// A tombstone under `LEAFSYNC_TOMBSTONE_POLICY=skip`.
    SkipTombstone,
}

/// Limits the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Values above this many bytes are `oversized`.
    pub max_record_bytes: usize,
    /// Tombstone handling.
    pub tombstones: TombstonePolicy,
    /// How far `updated_at` may be ahead of the clock before it is `future-version`.
    pub max_future_skew: Duration,
}

/// The job's clock, in microseconds since the epoch (what [`decide`] compares versions
/// with).
pub fn now_micros() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// Decides the fate of `msg` at `now` ([`now_micros`]), and finds its route (none for a
/// topic the map lacks).
pub fn decide(
    routes: &Routes,
    limits: Limits,
    msg: &OwnedMessage,
    now: i64,
) -> (Option<Arc<Route>>, Decision) {
    let Some(route) = routes.get(msg.topic()) else {
        let letter = DeadLetter::new(
            DeadLetterReason::UnknownTopic,
            format!("no collection is configured for topic {:?}", msg.topic()),
        );
        return (None, Decision::DeadLetter(letter));
    };
    (
        Some(Arc::clone(route)),
        decide_value(route, limits, msg.payload(), now),
    )
}

fn decide_value(route: &Route, limits: Limits, value: Option<&[u8]>, now: i64) -> Decision {
    let Some(value) = value else {
        return match limits.tombstones {
            TombstonePolicy::Skip => Decision::SkipTombstone,
            TombstonePolicy::DeadLetter => Decision::DeadLetter(DeadLetter::new(
                DeadLetterReason::Tombstone,
                "record has a null value; LIMS deletes are soft (is_deleted: true)",
            )),
        };
    };
    if value.len() > limits.max_record_bytes {
        return Decision::DeadLetter(DeadLetter {
            omit_value: true,
            ..DeadLetter::new(
                DeadLetterReason::Oversized,
                format!(
                    "value is {} bytes, the limit is {}",
                    value.len(),
                    limits.max_record_bytes
                ),
            )
        });
    }
    match ImageChange::from_json_slice(value) {
        Ok(change) => match future_skew(&change, limits, now) {
            Some(letter) => Decision::DeadLetter(letter),
            None => Decision::Apply(Write {
                collection: route.collection.clone(),
                change,
            }),
        },
        Err(e) => Decision::DeadLetter(DeadLetter::new((&e).into(), e.to_string())),
    }
}

/// The dead letter for a version further ahead of `now` than the limit: stored, it would
/// refuse every real update to come (the stale guard keeps the newest).
fn future_skew(change: &ImageChange, limits: Limits, now: i64) -> Option<DeadLetter> {
    let Version::At(micros) = change.version else {
        return None;
    };
    let limit = i64::try_from(limits.max_future_skew.as_micros()).unwrap_or(i64::MAX);
    let ahead = micros.saturating_sub(now);
    if ahead <= limit {
        return None;
    }
    let seconds = ahead / 1_000_000;
    let at = change
        .updated_at()
        .and_then(|d| d.try_to_rfc3339_string().ok())
        .unwrap_or_default();
    Some(DeadLetter {
        headers: vec![(header::FUTURE_SKEW, seconds.to_string())],
        ..DeadLetter::new(
            DeadLetterReason::FutureVersion,
            format!(
                "updated_at {at} is {seconds} s ahead of the job's clock (LEAFSYNC_MAX_FUTURE_SKEW is {} s)",
                limits.max_future_skew.as_secs()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn routes() -> Routes {
        "potato=imagecolplantpotato".parse().unwrap()
    }

    fn record(topic: &str, value: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            None,
            topic.to_owned(),
            Timestamp::NotAvailable,
            0,
            42,
            None,
        )
    }

    const LIMITS: Limits = Limits {
        max_record_bytes: 64,
        tombstones: TombstonePolicy::DeadLetter,
        max_future_skew: Duration::from_secs(300),
    };

    /// 2023-10-09T19:05:14.792Z, the clock of these tests.
    const NOW: i64 = 1_696_878_314_792_000;

    fn decide(
        routes: &Routes,
        limits: Limits,
        msg: &OwnedMessage,
    ) -> (Option<Arc<Route>>, Decision) {
        super::decide(routes, limits, msg, NOW)
    }

    fn reason((_, decision): (Option<Arc<Route>>, Decision)) -> &'static str {
        match decision {
            Decision::DeadLetter(d) => d.reason.as_str(),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_is_routed_to_its_topics_collection() {
        match decide(&routes(), LIMITS, &record("potato", Some(br#"{"id": 1}"#))) {
            (Some(route), Decision::Apply(w)) => {
                assert_eq!(w.collection, route.collection);
                assert_eq!(w.collection.as_str(), "imagecolplantpotato");
                assert_eq!(w.change.id.get(), 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn poison_records_are_dead_lettered_with_their_reason() {
        let r = routes();
        assert_eq!(
            reason(decide(&r, LIMITS, &record("corn", Some(br#"{"id": 1}"#)))),
            "unknown-topic"
        );
        assert_eq!(
            reason(decide(&r, LIMITS, &record("potato", None))),
            "tombstone"
        );
        assert_eq!(
            reason(decide(&r, LIMITS, &record("potato", Some(b"nope")))),
            "invalid-json"
        );
        assert_eq!(
            reason(decide(
                &r,
                LIMITS,
                &record("potato", Some(br#"{"id": "x"}"#))
            )),
            "invalid-id"
        );
        let big = format!(r#"{{"id": 1, "data": "{}"}}"#, "ab".repeat(64));
        match decide(&r, LIMITS, &record("potato", Some(big.as_bytes()))).1 {
            Decision::DeadLetter(d) => {
                assert_eq!(d.reason, DeadLetterReason::Oversized);
                assert!(d.omit_value);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_version_further_ahead_of_the_clock_than_the_skew_is_dead_lettered_with_the_skew() {
        let at = |t: &str| format!(r#"{{"id": 1, "updated_at": "{t}"}}"#);
        let r = routes();
        let letter = |t: &str| match decide(&r, LIMITS, &record("potato", Some(at(t).as_bytes()))).1
        {
            Decision::DeadLetter(d) => Some(d),
            Decision::Apply(_) => None,
            Decision::SkipTombstone => panic!("not a tombstone"),
        };
        assert!(
            letter("2023-10-09T19:10:14.792").is_none(),
            "300 s ahead: a clock a little off"
        );
        assert!(letter("2023-10-09T18:00:00").is_none(), "the past");
        let d = letter("2023-10-09T19:10:15.792").expect("301 s ahead");
        assert_eq!(d.reason, DeadLetterReason::FutureVersion);
        assert_eq!(d.headers, [(header::FUTURE_SKEW, "301".to_owned())]);
        let d = letter("2999-01-01T00:00:00").expect("year 2999");
        assert!(d.detail.contains("2999-01-01T00:00:00Z"), "{}", d.detail);
        let created = br#"{"id":1,"created_at":"2999-01-01T00:00:00","updated_at":null}"#;
        assert!(
            matches!(
                decide(&r, LIMITS, &record("potato", Some(created))).1,
                Decision::Apply(_)
            ),
            "a create carries no version to freeze the image with"
        );
    }

    #[test]
    fn tombstones_can_be_skipped_by_policy() {
        let limits = Limits {
            tombstones: TombstonePolicy::Skip,
            ..LIMITS
        };
        assert!(matches!(
            decide(&routes(), limits, &record("potato", None)),
            (Some(_), Decision::SkipTombstone)
        ));
    }
}
