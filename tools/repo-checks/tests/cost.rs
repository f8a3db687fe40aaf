//! The cost tables (docs/assignment.md) cannot drift: the pod requests and replica counts
//! the calculation uses are the ones `manifests/` declares, and docs/assignment.md holds
//! exactly what `lims-sim cost` prints.

use std::path::{Path, PathBuf};

use lims_sim::cost::{CostInputs, Requests, render};
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn objects(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).expect(path);
    text.split("\n---")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).expect("valid YAML"))
        .collect()
}

fn of_kind(path: &str, kind: &str) -> Value {
    objects(path)
        .into_iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {path}"))
}

/// `100m` → 100 millicores; `128Mi` → 128 MiB.
fn requests(deployment: &Value) -> Requests {
    let r = &deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"];
    let cpu = r["cpu"].as_str().expect("cpu request");
    let mem = r["memory"].as_str().expect("memory request");
    Requests {
        cpu_m: cpu
            .strip_suffix('m')
            .expect("cpu in m")
            .parse()
            .expect("cpu"),
        mem_mib: mem
            .strip_suffix("Mi")
            .expect("memory in Mi")
            .parse()
            .expect("memory"),
    }
}

#[test]
fn the_cost_model_uses_the_requests_and_replicas_the_manifests_declare() {
    let c = CostInputs::default();
    let job = "manifests/base/consumer-job.yaml";
    let api = "manifests/base/consumer-api.yaml";
    assert_eq!(c.job, requests(&of_kind(job, "Deployment")));
    assert_eq!(c.api, requests(&of_kind(api, "Deployment")));
    let hpa = of_kind(api, "HorizontalPodAutoscaler");
    assert_eq!(Some(c.api_replicas), hpa["spec"]["minReplicas"].as_f64());
    let keda = of_kind(
        "manifests/components/keda/scaledobject.yaml",
        "ScaledObject",
    );
    assert_eq!(
        Some(c.max_job_replicas),
        keda["spec"]["maxReplicaCount"].as_f64()
    );
}

#[test]
fn the_assignment_shows_exactly_what_lims_sim_cost_prints() {
    let doc =
        std::fs::read_to_string(root().join("docs/assignment.md")).expect("docs/assignment.md");
    let tables = render(&CostInputs::default());
    assert!(
        doc.contains(&tables),
        "docs/assignment.md must contain the output of `cargo run -p lims-sim -- cost`:\n{tables}"
    );
}
