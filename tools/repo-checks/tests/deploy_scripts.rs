//! The deploy scripts run against stub `kubectl`, `gcloud`, `docker` and `minikube` on
//! PATH that record their calls: the order a real deploy needs is asserted (APIs enabled,
//! amd64 images with a unique tag, push, apply, rollout waited for, the Db Synchronizer
//! scaled down), without a cluster.

use std::{path::Path, process::Command};

/// A stub tool: appends `name args…` to the call log, prints what the scripts read.
const STUB: &str = r#"#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$STUB_LOG"
case "$(basename "$0") $*" in
  "kubectl get crd"*) exit 1 ;;
  "kubectl -n leaf-image-management-system get deployments -o name") echo deployment.apps/db-synchronizer-job; echo deployment.apps/image-api ;;
  *"get ingress consumer-api"*) echo 203.0.113.7 ;;
  "minikube docker-env") echo "export STUB_DOCKER=minikube" ;;
esac
exit 0
"#;

fn run(script: &str, args: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::temp_dir().join(leafsync_test_support::unique_name("stubs"));
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["kubectl", "gcloud", "docker", "minikube"] {
        let path = dir.join(tool);
        std::fs::write(&path, STUB).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    let log = dir.join("calls.log");
    let status = Command::new("bash")
        .arg(root.join("scripts").join(script))
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("STUB_LOG", &log)
        .status()
        .expect("bash runs");
    assert!(status.success(), "{script} failed against the stubs");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    calls.lines().map(str::to_owned).collect()
}

/// The index of the first call starting with `prefix`, after `from`.
fn position(calls: &[String], prefix: &str, from: usize) -> usize {
    let found = calls[from..].iter().position(|c| c.starts_with(prefix));
    from + found.unwrap_or_else(|| panic!("no call `{prefix}…` after #{from} in {calls:#?}"))
}

#[test]
fn start_prod_enables_the_apis_builds_amd64_pushes_applies_waits_and_stops_the_batch_job() {
    let calls = run("start.prod.sh", &["my-project"]);
    let apis = position(
        &calls,
        "gcloud services enable container.googleapis.com artifactregistry.googleapis.com",
        0,
    );
    let build = position(
        &calls,
        "docker build --platform linux/amd64 -f Dockerfile.job",
        apis,
    );
    let push = position(&calls, "docker push", build);
    let apply = position(&calls, "kubectl apply -k", push);
    let rollout = position(
        &calls,
        "kubectl -n leaf-image-management-system rollout status deployment/consumer-job",
        apply,
    );
    position(
        &calls,
        "kubectl -n leaf-image-management-system scale deployment.apps/db-synchronizer-job --replicas=0",
        rollout,
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.contains("scale deployment.apps/image-api")),
        "only the Db Synchronizer is stopped"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("kubectl apply -k manifests/monitoring")),
        "no ServiceMonitors without their CRD"
    );
    let pushed: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("docker push"))
        .collect();
    assert_eq!(pushed.len(), 2);
    let tag = pushed[0].rsplit(':').next().unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .unwrap();
    assert!(
        tag.starts_with(String::from_utf8_lossy(&head.stdout).trim()),
        "images are tagged by commit (and marked dirty): {tag}"
    );
}

#[test]
fn start_dev_enables_metrics_server_builds_in_minikube_applies_waits_and_stops_the_batch_job() {
    let calls = run("start.dev.sh", &[]);
    let metrics_server = position(&calls, "minikube addons enable metrics-server", 0);
    let build = position(&calls, "docker build -f Dockerfile.job", metrics_server);
    let apply = position(
        &calls,
        "kubectl apply -k manifests/overlays/minikube",
        build,
    );
    let rollout = position(
        &calls,
        "kubectl -n leaf-image-management-system rollout status",
        apply,
    );
    position(
        &calls,
        "kubectl -n leaf-image-management-system scale deployment.apps/db-synchronizer-job --replicas=0",
        rollout,
    );
}
