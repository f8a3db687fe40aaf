//! What to do with one Kafka record: apply it, dead-letter it (and why), or skip it by
//! policy. Pure: no I/O, so every poison case is a unit test.

use leafsync_core::{ImageChange, Write};
use rdkafka::message::{Message, OwnedMessage};

use crate::config::{Route, TombstonePolicy};
pub use crate::dlq::DeadLetter;

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
    pub max_event_bytes: usize,
    /// Tombstone handling.
    pub tombstones: TombstonePolicy,
}

/// Decides the fate of `msg`.
pub fn decide(routes: &[Route], limits: Limits, msg: &OwnedMessage) -> Decision {
    let Some(route) = routes.iter().find(|r| r.topic == msg.topic()) else {
        return Decision::DeadLetter(DeadLetter::new(
            "unknown-topic",
            format!("no collection is configured for topic {:?}", msg.topic()),
        ));
    };
    let Some(value) = msg.payload() else {
        return match limits.tombstones {
            TombstonePolicy::Skip => Decision::SkipTombstone,
            TombstonePolicy::DeadLetter => Decision::DeadLetter(DeadLetter::new(
                "tombstone",
                "record has a null value; LIMS deletes are soft (is_deleted: true)",
            )),
        };
    };
    if value.len() > limits.max_event_bytes {
        return Decision::DeadLetter(DeadLetter {
            omit_value: true,
            ..DeadLetter::new(
                "oversized",
                format!(
                    "value is {} bytes, the limit is {}",
                    value.len(),
                    limits.max_event_bytes
                ),
            )
        });
    }
    match ImageChange::from_json_slice(value) {
        Ok(change) => Decision::Apply(Write {
            collection: route.collection.clone(),
            change,
        }),
        Err(e) => Decision::DeadLetter(DeadLetter::new(e.reason(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn routes() -> Vec<Route> {
        vec![Route {
            topic: "potato".to_owned(),
            collection: "imagecolplantpotato".to_owned(),
            label: "potato".to_owned(),
        }]
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
        max_event_bytes: 64,
        tombstones: TombstonePolicy::DeadLetter,
    };

    fn reason(decision: Decision) -> &'static str {
        match decision {
            Decision::DeadLetter(d) => d.reason,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_is_routed_to_its_topics_collection() {
        match decide(&routes(), LIMITS, &record("potato", Some(br#"{"id": 1}"#))) {
            Decision::Apply(w) => {
                assert_eq!(w.collection, "imagecolplantpotato");
                assert_eq!(w.change.id, 1);
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
        match decide(&r, LIMITS, &record("potato", Some(big.as_bytes()))) {
            Decision::DeadLetter(d) => {
                assert_eq!(d.reason, "oversized");
                assert!(d.omit_value);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tombstones_can_be_skipped_by_policy() {
        let limits = Limits {
            tombstones: TombstonePolicy::Skip,
            ..LIMITS
        };
        assert!(matches!(
            decide(&routes(), limits, &record("potato", None)),
            Decision::SkipTombstone
        ));
    }
}
