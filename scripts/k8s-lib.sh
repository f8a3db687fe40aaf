#!/usr/bin/env bash
# Shared by the start/stop scripts that deploy to a cluster. Sourced, never run.
# Every kubectl call that reaches a cluster goes through `kube`, pinned to the one context
# use_minikube_context or use_gke_context chose: the current context is never acted on by
# accident (a GKE context left current while deploying to minikube, or switched in another
# terminal during a ten-minute image build). A kubectl failure stops the script with
# kubectl's own message; it is never taken for "not found".

KUBE_CONTEXT=""

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# require_tools TOOL...: each must be on PATH.
require_tools() {
  local tool
  for tool; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done
}

kube() {
  [[ -n $KUBE_CONTEXT ]] || die "no kubectl context chosen (use_minikube_context or use_gke_context)"
  kubectl --context "$KUBE_CONTEXT" "$@"
}

# current_context: the current kubectl context, or "(none)".
current_context() { kubectl config current-context 2>/dev/null || echo "(none)"; }

# use_minikube_context PROFILE: act on minikube's own context (named after its profile),
# whichever context is current.
use_minikube_context() {
  local profile=$1 contexts current
  contexts=$(kubectl config get-contexts -o name) || die "cannot read the kubectl contexts (kubectl failed, see above)"
  grep -qxF "$profile" <<<"$contexts" ||
    die "no kubectl context '$profile' (minikube creates it: minikube start -p $profile); the current context, '$(current_context)', is left alone"
  KUBE_CONTEXT=$profile
  current=$(current_context)
  if [[ $current != "$profile" ]]; then
    echo "acting on minikube's context '$profile'; the current context, '$current', is left alone"
  fi
}

# use_gke_context PROJECT: act on the current context, which must be a GKE cluster of
# PROJECT (gcloud container clusters get-credentials names it gke_PROJECT_LOCATION_CLUSTER)
# unless LEAFSYNC_ALLOW_CONTEXT names it. Sets GKE_LOCATION and GKE_CLUSTER from the name.
use_gke_context() {
  local project=$1 current rest
  current=$(kubectl config current-context) ||
    die "no current kubectl context: gcloud container clusters get-credentials CLUSTER --location LOCATION --project $project"
  GKE_LOCATION="" GKE_CLUSTER=""
  if [[ $current == "gke_${project}_"*_* ]]; then
    rest=${current#"gke_${project}_"}
    GKE_LOCATION=${rest%%_*} GKE_CLUSTER=${rest#*_}
  elif [[ ${LEAFSYNC_ALLOW_CONTEXT:-} == "$current" ]]; then
    echo "acting on context '$current', which LEAFSYNC_ALLOW_CONTEXT allows"
  else
    die "refusing the current kubectl context '$current': expected a GKE cluster of project $project (a context named gke_${project}_LOCATION_CLUSTER, as gcloud container clusters get-credentials names it). Switch with kubectl config use-context, or set LEAFSYNC_ALLOW_CONTEXT=$current to act on this one anyway."
  fi
  KUBE_CONTEXT=$current
}

# found ARGS...: whether `kubectl get ARGS` finds the object; a failing kubectl stops the
# script instead of passing for "not found".
found() {
  local out
  out=$(kube get "$@" --ignore-not-found -o name) || die "kubectl get $* failed (see above); not taking that for \"not found\""
  [[ -n $out ]]
}

# require_namespace NAMESPACE: LIMS's namespace must exist.
require_namespace() {
  found namespace "$1" || die "namespace $1 not found in context $KUBE_CONTEXT: deploy LIMS first"
}

# require_keda RENDERED OVERLAY: a rendering with a ScaledObject needs KEDA's CRD; without
# it the apply would fail halfway, after the Deployments.
require_keda() {
  if grep -q '^kind: ScaledObject$' <<<"$1"; then
    found crd scaledobjects.keda.sh ||
      die "$2 scales consumer-job with KEDA, but context $KUBE_CONTEXT has no ScaledObject CRD: install KEDA (docs/operations.md, On GKE) or deploy without it"
  fi
}

# grant_node_pull PROJECT REGION REPOSITORY: lets the cluster's nodes pull from the Artifact
# Registry repository. Nodes pull as their node pool's service account (the Compute Engine
# default one unless the pool names another), which reads the registry only through the
# Editor role, often removed in organisations: without a grant, pods sit in
# ImagePullBackOff. The grant (roles/artifactregistry.reader on the repository) is
# idempotent.
grant_node_pull() {
  local project=$1 region=$2 repository=$3 accounts account number
  if [[ -z ${GKE_CLUSTER:-} ]]; then
    echo "cannot tell the cluster from context $KUBE_CONTEXT: its nodes' service account needs roles/artifactregistry.reader on $repository, else pods stay in ImagePullBackOff" >&2
    return 0
  fi
  accounts=$(gcloud container node-pools list --cluster "$GKE_CLUSTER" --location "$GKE_LOCATION" \
    --project "$project" --format 'value(config.serviceAccount)') ||
    die "cannot list the node pools of $GKE_CLUSTER (gcloud failed, see above)"
  while read -r account; do
    [[ -n $account ]] || continue
    if [[ $account == default ]]; then
      number=$(gcloud projects describe "$project" --format 'value(projectNumber)') ||
        die "cannot read the number of project $project (gcloud failed, see above)"
      account="$number-compute@developer.gserviceaccount.com"
    fi
    gcloud artifacts repositories add-iam-policy-binding "$repository" --project "$project" \
      --location "$region" --member "serviceAccount:$account" --role roles/artifactregistry.reader >/dev/null ||
      die "cannot grant roles/artifactregistry.reader on $repository to $account (needs the Artifact Registry Administrator role); without it pods stay in ImagePullBackOff"
    echo "$GKE_CLUSTER's nodes pull as $account: roles/artifactregistry.reader on $repository"
  done < <(sort -u <<<"$accounts")
}

# rerun_job NAMESPACE JOB: a Job's pod template is immutable and every deploy names a new
# image, so a finished Job is deleted (with its logs) before it is applied again; a Job
# still running stops the deploy instead.
rerun_job() {
  local namespace=$1 job=$2 state name conditions
  state=$(kube -n "$namespace" get job "$job" --ignore-not-found \
    -o jsonpath='{.metadata.name} {.status.conditions[?(@.status=="True")].type}') ||
    die "cannot read Job $job (kubectl failed, see above)"
  read -r name conditions <<<"$state"
  [[ -n $name ]] || return 0
  case " $conditions " in
    *" Complete "* | *" Failed "*)
      echo "deleting the finished Job $job ($conditions) so that it runs again with this deploy's image"
      kube -n "$namespace" delete job "$job" --wait=true
      ;;
    *)
      die "Job $job is still running: wait for it (kubectl --context $KUBE_CONTEXT -n $namespace logs -f job/$job) or delete it, then deploy again"
      ;;
  esac
}

# ready_body NAMESPACE POD PORT: what the pod's /ready answers (why it is unready), through
# a short port-forward: the images have no shell or curl, and `kubectl get --raw` on the
# pod's proxy reports a 503 without its body.
ready_body() {
  local namespace=$1 pod=$2 port=$3 out pid local_port="" _
  out=$(mktemp)
  kubectl --context "$KUBE_CONTEXT" -n "$namespace" port-forward "$pod" ":$port" >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do
    local_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out")
    [[ -n $local_port ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $local_port ]] || local_port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$out")
  if [[ -n $local_port ]]; then
    curl -s --max-time 5 "http://127.0.0.1:$local_port/ready" || echo "(no answer on port $port)"
  else
    echo "(no port-forward: $(tr '\n' ' ' <"$out"))"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$out"
}

# wait_for_rollout NAMESPACE DEPLOYMENT PORT TIMEOUT: waits for the rollout. If it does not
# finish in time, prints why and exits 1: the pods, what each one's /ready (on PORT)
# answers, its last log lines, and, when the job cannot build its unique index (duplicate
# ids, e.g. written by the Db Synchronizer, which has no unique index), the dedupe commands.
wait_for_rollout() {
  local namespace=$1 deployment=$2 port=$3 timeout=$4 pods pod ready logs index=""
  if kube -n "$namespace" rollout status "deployment/$deployment" --timeout="$timeout"; then
    return 0
  fi
  {
    echo
    echo "$deployment is not ready after $timeout. Its pods:"
    kube -n "$namespace" get pods -l "app.kubernetes.io/name=$deployment" -o wide || true
    pods=$(kube -n "$namespace" get pods -l "app.kubernetes.io/name=$deployment" -o name) ||
      pods=""
    for pod in $pods; do
      ready=$(ready_body "$namespace" "$pod" "$port")
      echo "--- $pod answers /ready with: $ready"
      echo "--- $pod, last log lines:"
      logs=$(kube -n "$namespace" logs "$pod" --tail=20 2>&1) || true
      echo "$logs"
      if [[ $ready == *index* || $logs == *"unique index"* ]]; then
        index=yes
      fi
    done
  } >&2
  if [[ -n $index ]]; then
    cat >&2 <<EOT

The job cannot build its unique index on id: the consumer DB holds some image ids more
than once (LIMS's Db Synchronizer writes without a unique index). List them, then keep the
newest copy of each; the job then builds its index and starts by itself:
  kubectl --context $KUBE_CONTEXT -n $namespace exec deploy/$deployment -- dedupe
  kubectl --context $KUBE_CONTEXT -n $namespace exec deploy/$deployment -- dedupe --apply
EOT
  fi
  exit 1
}

# db_synchronizers NAMESPACE: LIMS's Db Synchronizer deployments (LIMS names it
# db-synchronizer; anything containing that is taken), one per line; none is an answer, a
# failing kubectl is not.
db_synchronizers() {
  local deployments
  deployments=$(kube -n "$1" get deployments -o name) ||
    die "cannot list the deployments in $1 (kubectl failed, see above), so the Db Synchronizer's state is unknown"
  grep db-synchronizer <<<"$deployments" || true
}

# stop_batch_synchronizer NAMESPACE: scales LIMS's Db Synchronizer to 0 replicas. Both it
# and consumer-job write the consumer DB; once the stream runs, the batch copy must stop.
stop_batch_synchronizer() {
  local namespace=$1 deployments deployment
  deployments=$(db_synchronizers "$namespace") || exit 1
  if [[ -z $deployments ]]; then
    echo "no Db Synchronizer deployment found in $namespace: nothing to stop"
    return 0
  fi
  for deployment in $deployments; do
    kube -n "$namespace" scale "$deployment" --replicas=0
    echo "stopped LIMS's $deployment (the stream replaces it); bring it back with: kubectl --context $KUBE_CONTEXT -n $namespace scale $deployment --replicas=1"
  done
}

# batch_synchronizer_hint NAMESPACE: how to bring the Db Synchronizer back.
batch_synchronizer_hint() {
  local namespace=$1 deployments deployment
  deployments=$(db_synchronizers "$namespace") || exit 1
  for deployment in $deployments; do
    echo "LIMS's $deployment stays at 0 replicas; if no stream replaces it, bring it back: kubectl --context $KUBE_CONTEXT -n $namespace scale $deployment --replicas=1"
  done
}

# monitoring_crds: true when the cluster has both Prometheus Operator CRDs that
# manifests/monitoring uses (kube-prometheus-stack installs them together; applying with
# one missing would half-apply). A kubectl failure stops the script (see `found`).
monitoring_crds() {
  found crd servicemonitors.monitoring.coreos.com && found crd prometheusrules.monitoring.coreos.com
}

# apply_monitoring: the ServiceMonitors and alert rules, only where the Prometheus
# Operator's CRDs exist (kube-prometheus-stack); otherwise say how to add them later.
apply_monitoring() {
  if monitoring_crds; then
    kube apply -k manifests/monitoring
  else
    echo "no ServiceMonitor/PrometheusRule CRDs yet: once kube-prometheus-stack is installed, run kubectl --context $KUBE_CONTEXT apply -k manifests/monitoring"
  fi
}

# delete_leafsync NAMESPACE OVERLAY: deletes what the start scripts apply. The ScaledObject
# and the reconcile Job go by name, whichever overlay added them: deleting the default
# overlay would leave them behind.
delete_leafsync() {
  local namespace=$1 overlay=$2
  if found crd scaledobjects.keda.sh; then
    kube -n "$namespace" delete scaledobject consumer-job --ignore-not-found
  fi
  kube -n "$namespace" delete job leafsync-reconcile --ignore-not-found
  kube delete -k "$overlay" --ignore-not-found
  if monitoring_crds; then
    kube delete -k manifests/monitoring --ignore-not-found
  fi
}
