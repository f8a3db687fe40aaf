//! The Kubernetes manifests, rendered with `kubectl kustomize` exactly as they are
//! applied, checked for the properties the deployment relies on. Schemas are validated by
//! `scripts/lint.sh`; this test checks meaning: limits everywhere, non-root read-only
//! containers, the Ingress only on GKE, probes and health checks wired to routes the
//! real router serves, and ConfigMap values the binaries' own config parsers accept.

use std::{collections::HashMap, path::Path, process::Command};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use base64::Engine;
use consumer_api::{ApiConfig, AppState, app, config::EnvConfig};
use serde_yaml::Value;
use tower::ServiceExt;

fn render(dir: &str) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(dir))
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl is needed to render the manifests ({e}); scripts/test.sh checks for it")
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    text.split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("valid YAML"))
        .collect()
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], k: &str, name: &str) -> &'a Value {
    kind(objects, k)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {k} {name}"))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

/// The variables a Deployment's container gets from its ConfigMaps and Secrets.
fn environment(objects: &[Value], deployment: &Value) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        .as_sequence()
        .expect("envFrom")
    {
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            for (k, v) in named(objects, "ConfigMap", name)["data"]
                .as_mapping()
                .expect("data")
            {
                vars.push((text(k).to_owned(), text(v).to_owned()));
            }
        }
        if let Some(name) = source["secretRef"]["name"].as_str() {
            for (k, v) in named(objects, "Secret", name)["data"]
                .as_mapping()
                .expect("data")
            {
                // kustomize wraps long base64 values over several lines.
                let compact: String = text(v).split_whitespace().collect();
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64");
                vars.push((
                    text(k).to_owned(),
                    String::from_utf8(decoded).expect("UTF-8 secret"),
                ));
            }
        }
    }
    vars
}

async fn status(path: &str) -> StatusCode {
    let config = ApiConfig {
        mongo_uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200".to_owned(),
        ready_timeout_ms: 300,
        ..ApiConfig::default()
    };
    let router = app(AppState::connect(&config).await.expect("lazy client"));
    router
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

#[test]
fn every_container_has_limits_and_runs_unprivileged_read_only_as_non_root() {
    for overlay in ["manifests/overlays/minikube", "manifests/overlays/gke"] {
        let objects = render(overlay);
        let deployments = kind(&objects, "Deployment");
        assert_eq!(deployments.len(), 2, "{overlay}");
        for d in deployments {
            let pod = &d["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
            for c in pod["containers"].as_sequence().unwrap() {
                let name = text(&c["name"]);
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            c["resources"][bound][resource].is_string(),
                            "{overlay} {name}: {bound}.{resource}"
                        );
                    }
                }
                let sc = &c["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{name}");
                assert!(
                    sc["capabilities"]["drop"]
                        .as_sequence()
                        .unwrap()
                        .contains(&Value::from("ALL")),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn only_gke_has_an_ingress_and_it_is_the_only_way_in() {
    let minikube = render("manifests/overlays/minikube");
    assert!(
        kind(&minikube, "Ingress").is_empty(),
        "minikube needs no Ingress (port-forward)"
    );
    let gke = render("manifests/overlays/gke");
    let ingresses = kind(&gke, "Ingress");
    assert_eq!(ingresses.len(), 1);
    let spec = &ingresses[0]["spec"];
    assert!(
        spec["defaultBackend"].is_null(),
        "a default backend would make /metrics, /ready and /live public"
    );
    for path in spec["rules"][0]["http"]["paths"].as_sequence().unwrap() {
        assert_eq!(path["backend"]["service"]["name"], "consumer-api");
        assert!(
            text(&path["path"]) == "/openapi.json"
                || text(&path["path"]).starts_with("/image-plant")
        );
    }
    for service in kind(&gke, "Service") {
        assert_eq!(
            service["spec"]["type"], "ClusterIP",
            "no NodePort or LoadBalancer on GKE"
        );
    }
    let api_service = named(&gke, "Service", "consumer-api");
    assert_eq!(
        api_service["metadata"]["annotations"]["cloud.google.com/backend-config"],
        r#"{"default": "consumer-api"}"#
    );
    for (dir, env) in [
        ("manifests/overlays/minikube", "dev"),
        ("manifests/overlays/gke", "prod"),
    ] {
        for object in render(dir) {
            assert_eq!(
                object["metadata"]["labels"]["env"], env,
                "{dir}: {:?}",
                object["metadata"]["name"]
            );
        }
    }
    let with_nginx = render("manifests/examples/minikube-ingress");
    let nginx = kind(&with_nginx, "Ingress");
    assert_eq!(nginx.len(), 1);
    assert!(
        nginx[0]["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"].is_null(),
        "no rewrite-target: paths reach the API unchanged"
    );
}

#[tokio::test]
async fn probes_and_the_gke_health_check_hit_routes_the_api_serves() {
    let gke = render("manifests/overlays/gke");
    let api = named(&gke, "Deployment", "consumer-api");
    let container = &api["spec"]["template"]["spec"]["containers"][0];
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    let live = text(&container["livenessProbe"]["httpGet"]["path"]);
    let ready = text(&container["readinessProbe"]["httpGet"]["path"]);
    assert_eq!(
        status(live).await,
        StatusCode::OK,
        "liveness never depends on the DB"
    );
    assert_eq!(
        status(ready).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness follows the DB (down here)"
    );
    let health = &named(&gke, "BackendConfig", "consumer-api")["spec"]["healthCheck"];
    assert_eq!(text(&health["requestPath"]), ready);
    assert_eq!(
        health["port"].as_u64(),
        Some(port),
        "NEG health checks go to the container port"
    );
    let env = environment(&gke, api);
    let addr = &env
        .iter()
        .find(|(k, _)| k == "LEAFSYNC_API_ADDR")
        .expect("API address")
        .1;
    assert!(
        addr.ends_with(&format!(":{port}")),
        "the API listens on its containerPort"
    );
    let job = named(&gke, "Deployment", "consumer-job");
    let metrics = consumer_job::JobMetrics::new();
    for probe in ["livenessProbe", "readinessProbe"] {
        let path =
            text(&job["spec"]["template"]["spec"]["containers"][0][probe]["httpGet"]["path"]);
        let response = consumer_job::metrics::router(metrics.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "job {probe} {path}");
    }
    // Readiness follows the job's state: unready while it holds the stream.
    metrics.stalled.with_label_values(&["mongo-refused"]).set(1);
    let path = text(
        &job["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"],
    );
    let response = consumer_job::metrics::router(metrics)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn config_maps_hold_values_the_binaries_accept_and_the_grace_period_covers_the_drain() {
    let gke = render("manifests/overlays/gke");
    let job = named(&gke, "Deployment", "consumer-job");
    let job_config = consumer_job::JobConfig::from_vars(environment(&gke, job))
        .expect("job ConfigMap is valid config");
    assert!(
        job_config.kafka.brokers.ends_with(":9092"),
        "in-cluster Kafka listens on 9092"
    );
    let grace_ms = job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap()
        * 1000;
    let bound_ms = u64::try_from(job_config.shutdown_bound().as_millis()).unwrap();
    assert!(
        grace_ms > bound_ms,
        "grace {grace_ms} ms must exceed the whole shutdown bound ({bound_ms} ms: drain, final commit, close, exit)"
    );
    let api = named(&gke, "Deployment", "consumer-api");
    ApiConfig::from_vars(environment(&gke, api)).expect("API ConfigMap is valid config");
    let metrics_port =
        job["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
            .as_u64()
            .unwrap();
    assert_eq!(
        job_config.metrics_addr.port(),
        u16::try_from(metrics_port).unwrap()
    );
}

#[test]
fn service_monitors_find_prometheus_and_a_named_metrics_port() {
    // The gke overlay with the optional verifier: every Service a ServiceMonitor selects.
    let gke = render("manifests/examples/gke-verifier");
    let monitoring = render("manifests/monitoring");
    let monitors = kind(&monitoring, "ServiceMonitor");
    assert_eq!(monitors.len(), 3);
    let services: HashMap<&str, &Value> = kind(&gke, "Service")
        .into_iter()
        .map(|s| (text(&s["metadata"]["name"]), s))
        .collect();
    for m in monitors {
        assert_eq!(m["metadata"]["labels"]["release"], "prometheus");
        let endpoint = &m["spec"]["endpoints"][0];
        assert_eq!(
            endpoint["port"], "metrics",
            "LIMS convention: endpoint port name metrics"
        );
        assert_eq!(endpoint["path"], "/metrics");
        let selector = &m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"];
        let service = services
            .values()
            .find(|s| s["metadata"]["labels"]["app.kubernetes.io/name"] == *selector)
            .expect("a Service the monitor selects");
        let ports = service["spec"]["ports"].as_sequence().unwrap();
        assert!(ports.iter().any(|p| p["name"] == "metrics"), "{selector:?}");
    }
}

#[test]
fn keda_scales_the_job_on_lag_up_to_the_partition_count_only() {
    let objects = render("manifests/examples/gke-keda");
    let scaled = &kind(&objects, "ScaledObject")[0]["spec"];
    assert_eq!(scaled["scaleTargetRef"]["name"], "consumer-job");
    let triggers = scaled["triggers"].as_sequence().unwrap();
    let job = named(&objects, "Deployment", "consumer-job");
    let config = consumer_job::JobConfig::from_vars(environment(&objects, job)).unwrap();
    let topics: Vec<&str> = config.routes.topics();
    // One trigger over the whole group: per-topic triggers on one-partition topics would
    // each cap at one replica, and KEDA scales to the largest of them.
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    let t = &triggers[0];
    assert_eq!(t["type"], "kafka");
    assert_eq!(
        t["metadata"]["consumerGroup"].as_str(),
        Some(config.kafka.group_id.as_str())
    );
    assert!(
        t["metadata"]["topic"].is_null(),
        "no topic: the group's lag over all its topics"
    );
    // LIMS's topics have one partition each: more replicas than partitions would idle.
    assert_eq!(
        scaled["maxReplicaCount"].as_u64(),
        Some(topics.len() as u64)
    );
}

#[test]
fn the_reconcile_job_runs_the_job_image_once_with_the_jobs_configuration() {
    let objects = render("manifests/examples/gke-reconcile");
    let job = named(&objects, "Job", "leafsync-reconcile");
    let deployment = named(&objects, "Deployment", "consumer-job");
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"],
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(container["command"][0], "/usr/local/bin/reconcile");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["backoffLimit"], 0,
        "exit 2 is a report, not a crash"
    );
    assert_eq!(
        container["envFrom"], deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"],
        "the same consumer DB and plants as the job"
    );
    let producer = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEAFSYNC_PRODUCER_MONGO_URI")
        .expect("the producer DB");
    assert!(
        producer["value"].is_null(),
        "a URI may carry credentials: from a Secret, not a literal"
    );
    let key = &producer["valueFrom"]["secretKeyRef"];
    let secret = named(&objects, "Secret", text(&key["name"]));
    let compact: String = text(&secret["data"][text(&key["key"])])
        .split_whitespace()
        .collect();
    let uri = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64");
    assert!(
        String::from_utf8(uri)
            .unwrap()
            .starts_with("mongodb://mongodb-producer.leaf-image-management-system")
    );
    for bound in ["requests", "limits"] {
        assert!(container["resources"][bound]["memory"].is_string());
    }
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let dockerfile = include_str!("../../../Dockerfile.job");
    assert!(
        dockerfile.contains("/usr/local/bin/reconcile"),
        "the job image ships the binary the Job runs"
    );
}

#[test]
fn the_verifier_runs_one_watching_reconcile_with_the_jobs_configuration_and_is_scraped() {
    let objects = render("manifests/examples/gke-verifier");
    let verifier = named(&objects, "Deployment", "leafsync-verifier");
    let job = named(&objects, "Deployment", "consumer-job");
    // One replica (the default: no `replicas`, see the autoscaler test), never two at
    // once during a rollout.
    assert!(verifier["spec"]["replicas"].is_null());
    assert_eq!(verifier["spec"]["strategy"]["type"], "Recreate");
    let container = &verifier["spec"]["template"]["spec"]["containers"][0];
    let job_container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], job_container["image"]);
    assert_eq!(container["command"][0], "/usr/local/bin/reconcile");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    assert!(args.contains(&"--watch"), "{args:?}");
    assert!(
        !args.contains(&"--repair"),
        "verify-only by default: {args:?}"
    );
    assert_eq!(
        container["envFrom"], job_container["envFrom"],
        "the same consumer DB and plants as the job"
    );
    let producer = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "LEAFSYNC_PRODUCER_MONGO_URI")
        .expect("the producer DB");
    let key = &producer["valueFrom"]["secretKeyRef"];
    assert!(
        named(&objects, "Secret", text(&key["name"]))["data"][text(&key["key"])].is_string(),
        "the producer URI from a Secret"
    );
    // The ServiceMonitor (manifests/monitoring) finds the Service, and the Service the pod.
    let service = named(&objects, "Service", "leafsync-verifier");
    let monitors = render("manifests/monitoring");
    let monitor = named(&monitors, "ServiceMonitor", "leafsync-verifier");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v);
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&verifier["spec"]["template"]["metadata"]["labels"][k], v);
    }
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "metrics");
    }
}

/// Every kustomization a user may apply: the overlays and the examples.
const KUSTOMIZATIONS: [&str; 7] = [
    "manifests/overlays/minikube",
    "manifests/overlays/gke",
    "manifests/examples/minikube-ingress",
    "manifests/examples/gke-keda",
    "manifests/examples/gke-reconcile",
    "manifests/examples/gke-verifier",
    "manifests/monitoring",
];

#[test]
fn the_base_and_the_minikube_overlay_need_no_custom_resource_definition() {
    // Built into every Kubernetes; on GKE also its BackendConfig (a GKE built-in).
    let builtin = [
        "v1",
        "apps/v1",
        "policy/v1",
        "autoscaling/v2",
        "networking.k8s.io/v1",
    ];
    for dir in ["manifests/base", "manifests/overlays/minikube"] {
        for object in render(dir) {
            let api = text(&object["apiVersion"]);
            assert!(
                builtin.contains(&api),
                "{dir}: {} {} needs {api}, which a plain cluster may lack",
                text(&object["kind"]),
                text(&object["metadata"]["name"])
            );
        }
    }
    for object in render("manifests/overlays/gke") {
        let api = text(&object["apiVersion"]);
        assert!(
            builtin.contains(&api) || api == "cloud.google.com/v1",
            "gke: {api}"
        );
    }
}

#[test]
fn every_object_of_every_kustomization_lands_in_the_lims_namespace() {
    for dir in KUSTOMIZATIONS {
        for object in render(dir) {
            assert_eq!(
                object["metadata"]["namespace"].as_str(),
                Some("leaf-image-management-system"),
                "{dir}: {} {} has no namespace or another one (it would land in the current context's)",
                text(&object["kind"]),
                text(&object["metadata"]["name"])
            );
        }
    }
}

/// The labels a Deployment's pods carry.
fn pod_labels(deployment: &Value) -> &serde_yaml::Mapping {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod template labels")
}

#[test]
fn every_reference_between_objects_resolves_in_every_kustomization() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        let deployments = kind(&objects, "Deployment");
        let services = kind(&objects, "Service");
        let deployment_named =
            |name: &Value| deployments.iter().any(|d| d["metadata"]["name"] == *name);
        for service in &services {
            let selector = service["spec"]["selector"].as_mapping().expect("selector");
            assert!(
                deployments.iter().any(|d| {
                    let labels = pod_labels(d);
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                }),
                "{dir}: Service {:?} selects no pod template",
                service["metadata"]["name"]
            );
        }
        for ingress in kind(&objects, "Ingress") {
            for rule in ingress["spec"]["rules"].as_sequence().unwrap() {
                for path in rule["http"]["paths"].as_sequence().unwrap() {
                    let backend = &path["backend"]["service"];
                    let service = services
                        .iter()
                        .find(|s| s["metadata"]["name"] == backend["name"])
                        .unwrap_or_else(|| {
                            panic!("{dir}: Ingress backend {backend:?} names no Service")
                        });
                    let ports = service["spec"]["ports"].as_sequence().unwrap();
                    assert!(
                        ports.iter().any(|p| p["name"] == backend["port"]["name"]),
                        "{dir}: Ingress backend port {:?} is not a port of its Service",
                        backend["port"]
                    );
                }
            }
        }
        for hpa in kind(&objects, "HorizontalPodAutoscaler")
            .into_iter()
            .chain(kind(&objects, "ScaledObject"))
        {
            assert!(
                deployment_named(&hpa["spec"]["scaleTargetRef"]["name"]),
                "{dir}: {:?} scales a Deployment that is not there",
                hpa["metadata"]["name"]
            );
        }
        for service in &services {
            let annotation = &service["metadata"]["annotations"]["cloud.google.com/backend-config"];
            if let Some(json) = annotation.as_str() {
                let wanted: serde_json::Value =
                    serde_json::from_str(json).expect("JSON annotation");
                let name = wanted["default"].as_str().expect("default BackendConfig");
                assert!(
                    kind(&objects, "BackendConfig")
                        .iter()
                        .any(|b| b["metadata"]["name"] == name),
                    "{dir}: BackendConfig {name} is not there"
                );
            }
        }
        if dir.contains("minikube") {
            for deployment in &deployments {
                let container = &deployment["spec"]["template"]["spec"]["containers"][0];
                assert!(
                    text(&container["image"]).ends_with(":dev"),
                    "{dir}: minikube runs the images start.dev.sh builds"
                );
            }
        }
    }
}

/// The containers of every workload (Deployments and Jobs) of a rendering.
fn containers(objects: &[Value]) -> Vec<(&str, &Value)> {
    let mut found = Vec::new();
    for workload in kind(objects, "Deployment")
        .into_iter()
        .chain(kind(objects, "Job"))
    {
        for c in workload["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap()
        {
            found.push((text(&workload["metadata"]["name"]), c));
        }
    }
    found
}

#[test]
fn no_image_can_be_pulled_from_a_registry_we_do_not_own() {
    // `leafsync/consumer-job:latest` would be a Docker Hub repository of a stranger, and
    // the pod hands it the Mongo Secret. The manifests name a placeholder that cannot
    // resolve; start.prod.sh substitutes Artifact Registry's names (tested with the deploy
    // scripts), minikube runs what start.dev.sh built and never pulls.
    for dir in KUSTOMIZATIONS {
        for (workload, c) in containers(&render(dir)) {
            let image = text(&c["image"]);
            assert!(
                image.starts_with("leafsync.invalid/consumer-"),
                "{dir}: {workload} names {image}"
            );
            if dir.contains("minikube") {
                assert_eq!(c["imagePullPolicy"], "Never", "{dir}: {workload}");
                assert!(image.ends_with(":dev"), "{dir}: {workload}");
            }
        }
    }
}

#[test]
fn the_api_serves_on_through_a_pre_stop_pause_that_the_grace_period_covers() {
    for dir in KUSTOMIZATIONS
        .into_iter()
        .filter(|d| !d.contains("monitoring"))
    {
        let objects = render(dir);
        let api = named(&objects, "Deployment", "consumer-api");
        let pod = &api["spec"]["template"]["spec"];
        let pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{dir}: no preStop sleep on consumer-api"));
        assert!(
            (5..=15).contains(&pause),
            "{dir}: {pause} s: long enough for the load balancer to stop sending"
        );
        let config = ApiConfig::from_vars(environment(&objects, api)).unwrap();
        let stop_ms = pause * 1000 + config.request_timeout_ms + config.write_timeout_ms;
        let grace_ms = pod["terminationGracePeriodSeconds"].as_u64().unwrap() * 1000;
        assert!(
            grace_ms > stop_ms,
            "{dir}: grace {grace_ms} ms < pause + request + write timeouts ({stop_ms} ms)"
        );
    }
}

#[test]
fn a_disruption_budget_never_blocks_a_node_drain_at_the_autoscalers_minimum() {
    for dir in KUSTOMIZATIONS {
        let objects = render(dir);
        for pdb in kind(&objects, "PodDisruptionBudget") {
            let name = &pdb["metadata"]["name"];
            let hpa = kind(&objects, "HorizontalPodAutoscaler")
                .into_iter()
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == *name)
                .unwrap_or_else(|| panic!("{dir}: no HPA for PDB {name:?}"));
            let min_replicas = hpa["spec"]["minReplicas"].as_u64().unwrap();
            let spec = &pdb["spec"];
            let evictable = match (
                spec["minAvailable"].as_u64(),
                spec["maxUnavailable"].as_u64(),
            ) {
                (Some(min_available), None) => min_replicas.saturating_sub(min_available),
                (None, Some(max_unavailable)) => max_unavailable.min(min_replicas),
                other => panic!("{dir}: PDB {name:?} sets {other:?}"),
            };
            assert!(
                evictable >= 1,
                "{dir}: at {min_replicas} replica(s), PDB {name:?} allows no eviction: drains block"
            );
        }
    }
}

#[test]
fn every_object_of_every_kustomization_is_labelled_part_of_leafsync() {
    for dir in KUSTOMIZATIONS {
        for object in render(dir) {
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/part-of"],
                "leafsync",
                "{dir}: {} {}",
                text(&object["kind"]),
                text(&object["metadata"]["name"])
            );
        }
    }
}

#[test]
fn no_kustomization_fixes_a_replica_count_an_autoscaler_owns() {
    // KEDA (consumer-job) and the HPA (consumer-api) set the counts; `replicas` in a
    // manifest would reset them on every apply.
    for dir in KUSTOMIZATIONS {
        for deployment in kind(&render(dir), "Deployment") {
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{dir}: {} names replicas",
                text(&deployment["metadata"]["name"])
            );
        }
    }
}

#[test]
fn both_ingresses_route_the_same_public_paths() {
    let paths = |dir: &str| -> Vec<(String, String)> {
        let objects = render(dir);
        let ingress = named(&objects, "Ingress", "consumer-api");
        ingress["spec"]["rules"][0]["http"]["paths"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| (text(&p["path"]).to_owned(), text(&p["pathType"]).to_owned()))
            .collect()
    };
    assert_eq!(
        paths("manifests/examples/minikube-ingress"),
        paths("manifests/overlays/gke")
    );
}
