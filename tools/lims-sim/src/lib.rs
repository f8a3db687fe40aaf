//! `lims-sim`: a stand-in for the LIMS producer side, for demos, end-to-end tests and the
//! batch-vs-stream comparison, since LIMS's own Python services cannot run here.
//!
//! # Layout
//! - [`batch_sync`]: LIMS's Db Synchronizer Job (pages of 50, every N s) with its gauges.
//! - [`cost`]: the annual-cost tables of docs/assignment.md (batch vs stream on GKE, own
//!   hardware).
//! - [`jpeg`]: real JPEG bytes (~15 KiB) for camera images.
//! - [`experiment`]: batch and stream side by side; CSV and PNG of volume and staleness.
//! - [`image`]: one leaf image as the producer DB stores it (pymongo's BSON types, built
//!   independently of leafsync's parser) and as the Image API sends it (JSON, hex data).
//! - [`plot`]: a dependency-light line-chart PNG for the experiment.
//! - [`simulator`]: the camera, disease, users and delete jobs at LIMS's rates (with a
//!   speed-up), writing the producer DB and publishing events, with fault knobs.
//! - [`verify`]: producer DB vs consumer DB, document by document, field by field.

pub mod batch_sync;
pub mod cost;
pub mod experiment;
pub mod image;
pub mod jpeg;
pub mod plot;
pub mod simulator;
pub mod verify;

/// LIMS's producer database.
pub const PRODUCER_DB: &str = "imagedbplantproducer";
