//! The deploy scripts run against stub `kubectl`, `gcloud`, `docker`, `minikube` and `curl`
//! on PATH that record their calls: the order a real deploy needs is asserted (APIs
//! enabled, the nodes allowed to pull, amd64 images with a unique tag, push, apply,
//! rollout waited for, the Db Synchronizer scaled down), and so is what must not happen:
//! acting on the wrong cluster, a rollout timeout without a diagnosis, a kubectl failure
//! taken for "not found". `kubectl kustomize` is the real one, and so is every rendering
//! an `apply -k` would send, so the applied images are checked too. Last, the pipeline
//! that builds the images: how it logs in, and what its test job leaves to the lint stage.

use std::{path::Path, process::Command};

/// A stub tool: appends `name args…` to the call log and answers what the scripts read.
/// Variables shape the cluster it pretends to be (see each `STUB_*` below).
const STUB: &str = r#"#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$STUB_LOG"
tool=$(basename "$0")
if [[ $tool == kubectl && ${1:-} == --context ]]; then shift 2; fi
call="$tool $*"
fail() { echo "$*" >&2; exit 1; }
# STUB_FAIL: a glob; a matching call fails the way an unreachable cluster makes it fail.
# shellcheck disable=SC2053
if [[ -n ${STUB_FAIL:-} && $call == $STUB_FAIL ]]; then
  fail "Unable to connect to the server: dial tcp 203.0.113.9:443: i/o timeout"
fi
case "$call" in
  "kubectl kustomize "*) exec "$REAL_KUBECTL" "$@" ;;
  "kubectl apply -k "*) "$REAL_KUBECTL" kustomize "$3" >>"$STUB_LOG.applied" ;;
  "kubectl config current-context") echo "${STUB_CONTEXT:-gke_my-project_europe-west1-b_lims}" ;;
  "kubectl config get-contexts -o name") printf '%s\n' minikube gke_my-project_europe-west1-b_lims ;;
  "kubectl get namespace leaf-image-management-system --ignore-not-found -o name") echo namespace/leaf-image-management-system ;;
  # STUB_CRDS: the CRDs the cluster has (none by default).
  "kubectl get crd "*)
    for crd in ${STUB_CRDS:-}; do
      [[ $call == *" $crd "* ]] && echo "customresourcedefinition.apiextensions.k8s.io/$crd"
    done ;;
  "kubectl -n leaf-image-management-system get deployments -o name")
    echo deployment.apps/db-synchronizer; echo deployment.apps/image-api ;;
  # STUB_JOB: the reconcile Job's true conditions ("Complete", "" while it runs); unset: none.
  "kubectl -n leaf-image-management-system get job leafsync-reconcile "*)
    [[ -z ${STUB_JOB+set} ]] || echo "leafsync-reconcile $STUB_JOB" ;;
  # STUB_ROLLOUT_TIMEOUT: consumer-job never gets ready (duplicate ids: no unique index).
  *"rollout status deployment/consumer-job"*)
    [[ -z ${STUB_ROLLOUT_TIMEOUT:-} ]] || fail "error: timed out waiting for the condition" ;;
  *"get pods -l app.kubernetes.io/name=consumer-job -o name") echo pod/consumer-job-5d8f7-x2x9q ;;
  *"port-forward pod/consumer-job-5d8f7-x2x9q :9100") echo "Forwarding from 127.0.0.1:40123 -> 9100" ;;
  "curl "*"127.0.0.1:40123/ready") printf 'stalled: index' ;;
  *"logs pod/consumer-job-5d8f7-x2x9q --tail=20")
    echo '{"level":"ERROR","fields":{"message":"cannot create the unique index on id; holding until it can"}}' ;;
  *"get ingress consumer-api"*) echo 203.0.113.7 ;;
  # STUB_DOCKER_ENV: what minikube docker-env prints ("fail": it fails).
  "minikube -p minikube docker-env --shell bash")
    [[ ${STUB_DOCKER_ENV:-} != fail ]] || fail "X Exiting due to MK_USAGE: The docker-env command is only compatible with the \"docker\" runtime"
    echo "${STUB_DOCKER_ENV-export DOCKER_HOST=\"tcp://192.168.49.2:2376\"}" ;;
  "gcloud container node-pools list "*) echo default ;;
  "gcloud projects describe my-project --format value(projectNumber)") echo 123456789012 ;;
esac
exit 0
"#;

/// What a script did against the stubs.
struct Run {
    success: bool,
    /// Every stub call, in order, as `tool args…`.
    calls: Vec<String>,
    /// stdout and stderr.
    output: String,
    /// Every rendering an `apply -k` sent, concatenated.
    applied: String,
}

fn stubbed(script: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let real_kubectl = Command::new("bash")
        .args(["-c", "command -v kubectl"])
        .output()
        .expect("bash runs");
    let real_kubectl = String::from_utf8(real_kubectl.stdout).unwrap();
    assert!(
        !real_kubectl.trim().is_empty(),
        "kubectl is needed to render the manifests"
    );
    let dir = std::env::temp_dir().join(leafsync_test_support::unique_name("stubs"));
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["kubectl", "gcloud", "docker", "minikube", "curl"] {
        let path = dir.join(tool);
        std::fs::write(&path, STUB).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    let log = dir.join("calls.log");
    let mut command = Command::new("bash");
    command
        .arg(root.join("scripts").join(script))
        .args(args)
        .env(
            "PATH",
            format!("{}:{}", dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("STUB_LOG", &log)
        .env("REAL_KUBECTL", real_kubectl.trim());
    for var in [
        "LEAFSYNC_OVERLAY",
        "LEAFSYNC_ALLOW_CONTEXT",
        "LEAFSYNC_MINIKUBE_PROFILE",
        "LEAFSYNC_TAG",
        "DOCKER_HOST",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("bash runs");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let applied = std::fs::read_to_string(dir.join("calls.log.applied")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Run {
        success: output.status.success(),
        calls: calls.lines().map(str::to_owned).collect(),
        output: text,
        applied,
    }
}

impl Run {
    /// Asserts the script succeeded.
    fn ok(self, script: &str) -> Self {
        assert!(
            self.success,
            "{script} failed against the stubs:\n{}",
            self.output
        );
        self
    }

    /// Asserts the script failed, saying `words`.
    fn refused(&self, script: &str, words: &[&str]) {
        assert!(!self.success, "{script} went ahead:\n{}", self.output);
        for w in words {
            assert!(
                self.output.contains(w),
                "{script} does not say {w:?}:\n{}",
                self.output
            );
        }
    }

    /// Whether any call, without its `--context`, starts with `prefix`.
    fn called(&self, prefix: &str) -> bool {
        self.calls.iter().any(|c| bare(c).starts_with(prefix))
    }

    /// The kubectl calls that reach a cluster (not `config`, not `kustomize`).
    fn cluster_calls(&self) -> Vec<&String> {
        self.calls
            .iter()
            .filter(|c| c.starts_with("kubectl "))
            .filter(|c| !c.starts_with("kubectl config ") && !c.starts_with("kubectl kustomize "))
            .collect()
    }
}

/// A call without kubectl's `--context NAME`.
fn bare(call: &str) -> String {
    match call.strip_prefix("kubectl --context ") {
        Some(rest) => format!("kubectl {}", rest.split_once(' ').map_or("", |(_, r)| r)),
        None => call.to_owned(),
    }
}

/// The index of the first call starting with `prefix` (without its `--context`), after `from`.
fn position(calls: &[String], prefix: &str, from: usize) -> usize {
    let found = calls[from..]
        .iter()
        .position(|c| bare(c).starts_with(prefix));
    from + found.unwrap_or_else(|| panic!("no call `{prefix}…` after #{from} in {calls:#?}"))
}

/// The `image:` values of a rendering.
fn images(rendered: &str) -> Vec<&str> {
    rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect()
}

const GKE: &str = "gke_my-project_europe-west1-b_lims";

#[test]
fn start_prod_enables_the_apis_lets_nodes_pull_builds_amd64_pushes_applies_waits_and_stops_the_batch_job()
 {
    let run = stubbed("start.prod.sh", &["my-project"], &[]).ok("start.prod.sh");
    let calls = &run.calls;
    let apis = position(
        calls,
        "gcloud services enable container.googleapis.com artifactregistry.googleapis.com",
        0,
    );
    let pull = position(
        calls,
        "gcloud artifacts repositories add-iam-policy-binding leafsync --project my-project --location europe-west1 \
         --member serviceAccount:123456789012-compute@developer.gserviceaccount.com --role roles/artifactregistry.reader",
        apis,
    );
    let build = position(
        calls,
        "docker build --platform linux/amd64 -f Dockerfile.job",
        pull,
    );
    let push = position(calls, "docker push", build);
    let apply = position(calls, "kubectl apply -k", push);
    let rollout = position(
        calls,
        "kubectl -n leaf-image-management-system rollout status deployment/consumer-job",
        apply,
    );
    position(
        calls,
        "kubectl -n leaf-image-management-system scale deployment.apps/db-synchronizer --replicas=0",
        rollout,
    );
    assert!(
        !run.called("kubectl -n leaf-image-management-system scale deployment.apps/image-api"),
        "only the Db Synchronizer is stopped"
    );
    assert!(
        !run.called("kubectl apply -k manifests/monitoring"),
        "no ServiceMonitors without their CRD"
    );
    let pushed: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.strip_prefix("docker push "))
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
    // The images applied are the images pushed: no placeholder survives the rename.
    let applied = images(&run.applied);
    assert_eq!(applied.len(), 2, "{}", run.applied);
    for image in applied {
        assert!(
            pushed.contains(&image),
            "{image} was not pushed: {pushed:?}"
        );
    }
    for call in run.cluster_calls() {
        assert!(
            call.starts_with(&format!("kubectl --context {GKE} ")),
            "{call}"
        );
    }
}

#[test]
fn start_dev_enables_metrics_server_builds_in_minikube_applies_waits_and_stops_the_batch_job() {
    let run = stubbed("start.dev.sh", &[], &[]).ok("start.dev.sh");
    let calls = &run.calls;
    let metrics_server = position(
        calls,
        "minikube -p minikube addons enable metrics-server",
        0,
    );
    let docker_env = position(
        calls,
        "minikube -p minikube docker-env --shell bash",
        metrics_server,
    );
    let build = position(
        calls,
        "docker build -f Dockerfile.job -t leafsync.invalid/consumer-job:dev",
        docker_env,
    );
    let apply = position(calls, "kubectl apply -k manifests/overlays/minikube", build);
    let rollout = position(
        calls,
        "kubectl -n leaf-image-management-system rollout status",
        apply,
    );
    position(
        calls,
        "kubectl -n leaf-image-management-system scale deployment.apps/db-synchronizer --replicas=0",
        rollout,
    );
    let applied = images(&run.applied);
    assert_eq!(applied.len(), 2);
    for image in applied {
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("docker build") && c.contains(&format!("-t {image} "))),
            "{image} is the image start.dev.sh built"
        );
    }
}

#[test]
fn the_dev_scripts_act_on_minikube_even_with_a_gke_context_current() {
    for script in ["start.dev.sh", "stop.dev.sh"] {
        let run = stubbed(script, &[], &[("STUB_CONTEXT", GKE)]).ok(script);
        let cluster_calls = run.cluster_calls();
        assert!(!cluster_calls.is_empty());
        for call in cluster_calls {
            assert!(
                call.starts_with("kubectl --context minikube "),
                "{script}: {call}"
            );
        }
        assert!(
            run.output.contains(GKE),
            "{script} says which context it leaves alone"
        );
    }
}

#[test]
fn the_prod_scripts_refuse_a_context_that_is_not_a_gke_cluster_of_the_project() {
    for script in ["start.prod.sh", "stop.prod.sh"] {
        for context in ["minikube", "gke_other-project_europe-west1-b_lims"] {
            let run = stubbed(script, &["my-project"], &[("STUB_CONTEXT", context)]);
            run.refused(
                script,
                &[
                    &format!("'{context}'"),
                    "gke_my-project_",
                    &format!("LEAFSYNC_ALLOW_CONTEXT={context}"),
                ],
            );
            assert!(
                run.cluster_calls().is_empty() && !run.called("docker") && !run.called("gcloud"),
                "{script} acted before refusing: {:#?}",
                run.calls
            );
        }
        // The override names the context it allows.
        let run = stubbed(
            script,
            &["my-project"],
            &[
                ("STUB_CONTEXT", "minikube"),
                ("LEAFSYNC_ALLOW_CONTEXT", "minikube"),
            ],
        )
        .ok(script);
        for call in run.cluster_calls() {
            assert!(call.starts_with("kubectl --context minikube "), "{call}");
        }
    }
}

#[test]
fn a_rollout_timeout_says_why_and_how_to_repair_duplicate_ids() {
    for script in ["start.prod.sh", "start.dev.sh"] {
        let run = stubbed(script, &["my-project"], &[("STUB_ROLLOUT_TIMEOUT", "1")]);
        run.refused(
            script,
            &[
                "consumer-job is not ready",
                "pod/consumer-job-5d8f7-x2x9q answers /ready with: stalled: index",
                "cannot create the unique index on id",
                "exec deploy/consumer-job -- dedupe --apply",
            ],
        );
        assert!(
            !run.called("kubectl -n leaf-image-management-system scale"),
            "{script}: the Db Synchronizer keeps running while the stream does not"
        );
    }
}

#[test]
fn a_failing_minikube_docker_env_stops_before_building_into_the_hosts_docker() {
    for (docker_env, says) in [
        ("fail", "minikube docker-env failed"),
        ("", "no DOCKER_HOST"),
    ] {
        let run = stubbed("start.dev.sh", &[], &[("STUB_DOCKER_ENV", docker_env)]);
        run.refused("start.dev.sh", &[says]);
        assert!(!run.called("docker build"), "{:#?}", run.calls);
    }
}

#[test]
fn a_finished_reconcile_job_is_deleted_before_it_is_applied_again() {
    let reconcile = [("LEAFSYNC_OVERLAY", "manifests/examples/gke-reconcile")];
    for conditions in ["SuccessCriteriaMet Complete", "FailureTarget Failed"] {
        let env = [reconcile[0], ("STUB_JOB", conditions)];
        let run = stubbed("start.prod.sh", &["my-project"], &env).ok("start.prod.sh");
        let delete = position(
            &run.calls,
            "kubectl -n leaf-image-management-system delete job leafsync-reconcile",
            0,
        );
        position(&run.calls, "kubectl apply -k", delete);
    }
    // Never run before: nothing to delete.
    let run = stubbed("start.prod.sh", &["my-project"], &reconcile).ok("start.prod.sh");
    assert!(!run.called("kubectl -n leaf-image-management-system delete job"));
    // Still running: the deploy stops rather than fail on an immutable template.
    let env = [reconcile[0], ("STUB_JOB", "")];
    let run = stubbed("start.prod.sh", &["my-project"], &env);
    run.refused("start.prod.sh", &["leafsync-reconcile is still running"]);
    assert!(!run.called("kubectl apply"));
}

#[test]
fn keda_is_applied_only_where_its_crd_exists_and_always_removed() {
    let keda = ("LEAFSYNC_OVERLAY", "manifests/examples/gke-keda");
    let run = stubbed("start.prod.sh", &["my-project"], &[keda]);
    run.refused("start.prod.sh", &["no ScaledObject CRD", "install KEDA"]);
    assert!(
        !run.called("docker build") && !run.called("kubectl apply"),
        "refused before building: {:#?}",
        run.calls
    );
    let with_keda = [keda, ("STUB_CRDS", "scaledobjects.keda.sh")];
    let run = stubbed("start.prod.sh", &["my-project"], &with_keda).ok("start.prod.sh");
    assert!(run.applied.contains("kind: ScaledObject"));
    // stop.prod.sh with the default overlay still removes the ScaledObject.
    let run = stubbed(
        "stop.prod.sh",
        &["my-project"],
        &[("STUB_CRDS", "scaledobjects.keda.sh")],
    )
    .ok("stop.prod.sh");
    let delete = position(
        &run.calls,
        "kubectl -n leaf-image-management-system delete scaledobject consumer-job --ignore-not-found",
        0,
    );
    position(
        &run.calls,
        "kubectl delete -k manifests/overlays/gke --ignore-not-found",
        delete,
    );
}

#[test]
fn a_failing_kubectl_is_never_reported_as_not_found() {
    let cases = [
        (
            "start.prod.sh",
            "kubectl -n leaf-image-management-system get deployments -o name",
            "no Db Synchronizer",
        ),
        ("stop.prod.sh", "kubectl get crd *", "no ServiceMonitor CRD"),
        (
            "start.prod.sh",
            "kubectl get crd servicemonitors*",
            "no ServiceMonitor CRD",
        ),
        (
            "start.prod.sh",
            "kubectl get namespace *",
            "not found in context",
        ),
    ];
    for (script, failing, wrong_answer) in cases {
        let run = stubbed(script, &["my-project"], &[("STUB_FAIL", failing)]);
        run.refused(script, &["Unable to connect to the server", "kubectl"]);
        assert!(
            !run.output.contains(wrong_answer),
            "{script}, with `{failing}` failing, says {wrong_answer:?}:\n{}",
            run.output
        );
    }
}

#[test]
fn the_pipeline_logs_in_from_stdin_and_its_test_job_skips_what_the_lint_stage_ran() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ci: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join(".gitlab-ci.yml")).unwrap())
            .unwrap();
    let login: Vec<&str> = ci[".image"]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| l.contains("buildah login"))
        .collect();
    assert_eq!(login.len(), 1);
    assert!(
        login[0].contains("--password-stdin") && !login[0].contains(" -p "),
        "a -p argument shows the password in the process list: {}",
        login[0]
    );
    assert_eq!(ci["test"]["variables"]["LEAFSYNC_SKIP_LINT"], "1");

    // scripts/test.sh in a copy of its own, with lib.sh, lint.sh, with-services.sh and
    // cargo stubbed.
    let dir = std::env::temp_dir().join(leafsync_test_support::unique_name("test-sh"));
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(root.join("scripts/test.sh"), dir.join("scripts/test.sh")).unwrap();
    let stubs = [
        ("scripts/lint.sh", "echo lint.sh >>\"$STUB_LOG\""),
        (
            "scripts/lib.sh",
            "need_prometheus() { echo need_prometheus >>\"$STUB_LOG\"; }",
        ),
        ("scripts/with-services.sh", "exec \"$@\""),
        ("bin/cargo", "echo \"cargo $*\" >>\"$STUB_LOG\""),
    ];
    for (path, body) in stubs {
        std::fs::write(dir.join(path), format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        Command::new("chmod")
            .arg("+x")
            .arg(dir.join(path))
            .status()
            .unwrap();
    }
    let calls = |skip: &str| -> Vec<String> {
        let log = dir.join(format!("calls-{skip}.log"));
        let status = Command::new("bash")
            .arg(dir.join("scripts/test.sh"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.join("bin").display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("STUB_LOG", &log)
            .env("LEAFSYNC_SKIP_LINT", skip)
            .env("LEAFSYNC_SKIP_README_CHECK", "1")
            .env("LEAFSYNC_TEST_MONGO_URI", "mongodb://127.0.0.1:1")
            .env("LEAFSYNC_TEST_KAFKA_BROKERS", "127.0.0.1:1")
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        calls("0"),
        [
            "need_prometheus",
            "lint.sh",
            "cargo fmt",
            "cargo clippy",
            "cargo test"
        ],
        "locally, the test command checks everything"
    );
    assert_eq!(
        calls("1"),
        ["need_prometheus", "cargo test"],
        "in CI, the lint stage did the rest (the Prometheus test still needs prometheus)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
