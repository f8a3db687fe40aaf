//! `consumer-api`: the read side of the consumer DB (placeholder until its issue lands).
