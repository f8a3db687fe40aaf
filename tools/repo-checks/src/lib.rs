//! Checks of the repository as a whole, gathered in one place: each ties a document or a
//! deployment artefact to the code it describes, so neither can drift alone. Everything
//! lives under `tests/`:
//! - `manifests.rs`: the Kubernetes manifests, rendered as they are applied, against the
//!   binaries' config parsers and routers;
//! - `deploy_scripts.rs`: the deploy scripts against stub `kubectl`/`gcloud`/`docker`;
//! - `dashboard.rs`: the Grafana dashboard against the metrics both binaries export;
//! - `readme.rs`: the README's configuration tables against both config structs;
//! - `cost.rs`: the README's cost tables against the manifests and `lims-sim cost`.
