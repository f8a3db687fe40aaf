//! Checks of the repository as a whole, gathered in one place: each ties a document or a
//! deployment artefact to the code it describes, so neither can drift alone. Everything
//! lives under `tests/`:
//! - `manifests.rs`: the Kubernetes manifests, rendered as they are applied, against the
//!   binaries' config parsers and routers;
//! - `deploy_scripts.rs`: the deploy scripts against stub `kubectl`/`gcloud`/`docker`;
//! - `dashboard.rs`: the Grafana dashboard against the metrics both binaries export;
//! - `readme.rs`: the configuration tables of docs/operations.md against both config
//!   structs, and its dead-letter table against the job's reasons;
//! - `cost.rs`: the cost tables of docs/assignment.md against the manifests and
//!   `lims-sim cost`;
//! - `docs.rs`: every relative link and `#anchor` of README.md, ARCHITECTURE.md and
//!   `docs/*.md`, and every function ARCHITECTURE.md's record walk names.
