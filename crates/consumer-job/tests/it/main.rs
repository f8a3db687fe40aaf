//! consumer-job's integration tests against real services (Apache Kafka and SecantusDB,
//! started by `scripts/test.sh`), in one test binary: a module per concern, the shared
//! harness in [`common`]. One binary links once, where seven each linked the job, the
//! drivers and the harness again.

mod common;
mod crash_recovery;
mod dedupe;
mod faults;
mod held;
mod hostile;
mod mongo_outage;
mod pipeline;
mod reconcile;
mod replay;
mod verify;
mod verify_resume;
