//! Shared model of leafsync: what a LIMS leaf image is, how an Image API event becomes a
//! MongoDB update, and the repository both binaries use to read and write the consumer DB.
//!
//! # Layout
//! - [`plant`]: the three plant types and their LIMS collection names.
//! - [`env`]: typed configuration from `LEAFSYNC_*` variables, errors naming the variable.
//! - [`id`]: [`id::ImageId`], the one "non-negative integer" rule for image ids.
//! - [`collection`]: [`collection::CollectionName`], a name MongoDB accepts, checked once.
//! - [`event`]: the boundary parser, Kafka record value (Image API JSON) → [`event::ImageChange`].
//! - [`view`]: the reverse direction, a stored document → the Image API's JSON shape.
//! - [`compare`]: a producer image against its consumer copy (`reconcile`, verification).
//! - [`repo`]: [`repo::ImageRepository`], batched order-safe upserts and the read queries.
//! - [`metrics`]: the Prometheus text exposition both binaries serve.
//! - [`mongo`]: connecting, and deciding which Mongo errors are worth retrying.
//! - [`redact`]: connection strings without their credentials, for logs and errors.
//! - [`runtime`]: logging set-up and the shutdown signal both binaries share.

pub mod collection;
pub mod compare;
pub mod env;
pub mod event;
pub mod id;
pub mod metrics;
pub mod mongo;
pub mod plant;
pub mod redact;
pub mod repo;
pub mod runtime;
pub mod view;

pub use collection::{CollectionName, InvalidCollectionName};
pub use event::{EventError, ImageChange, VERSION_FIELD, Version};
pub use id::{ImageId, InvalidImageId};
pub use plant::{PlantType, UnknownPlant};
pub use repo::{Hold, ImageFilter, ImageRepository, RepoError, Write, WriteOutcome, WritePath};

/// The consumer database LIMS's Db Synchronizer writes to, and so do we.
pub const CONSUMER_DB: &str = "imagedbplantconsumer";

/// LIMS's consumer MongoDB inside the cluster: both binaries' default `LEAFSYNC_MONGO_URI`.
pub const CONSUMER_MONGO_URI: &str =
    "mongodb://mongodb-consumer.leaf-image-management-system.svc.cluster.local:27017";
