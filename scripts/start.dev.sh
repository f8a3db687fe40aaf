#!/usr/bin/env bash
# Deploys leafsync into a running minikube next to LIMS: builds both images inside
# minikube's Docker daemon, applies manifests/overlays/minikube, waits for the rollout and
# prints how to reach the API (port-forward; no Ingress needed). Once it runs, LIMS's Db
# Synchronizer is scaled to 0: both would write the consumer DB (stop.dev.sh says how to undo).
# Every kubectl call names minikube's context, whichever context is current.
# Env: LEAFSYNC_MINIKUBE_PROFILE (minikube; its kubectl context has the same name),
#      LEAFSYNC_OVERLAY (manifests/overlays/minikube; e.g. manifests/examples/minikube-ingress),
#      LEAFSYNC_API_LOCAL_PORT (8090).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
namespace=leaf-image-management-system
profile=${LEAFSYNC_MINIKUBE_PROFILE:-minikube}
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
local_port=${LEAFSYNC_API_LOCAL_PORT:-8090}

require_tools minikube kubectl docker curl
use_minikube_context "$profile"
minikube -p "$profile" status >/dev/null || die "minikube is not running (minikube start -p $profile)"
require_namespace "$namespace"
rendered=$(kubectl kustomize "$overlay") || die "cannot render $overlay (see above)"
require_keda "$rendered" "$overlay"

# The API's HPA reads CPU from metrics-server; an Ingress needs the nginx addon.
minikube -p "$profile" addons enable metrics-server
if grep -q '^kind: Ingress$' <<<"$rendered"; then
  minikube -p "$profile" addons enable ingress
fi

# Without minikube's daemon in the environment, the images would land in this machine's
# Docker, where minikube never sees them (pods: ErrImageNeverPull).
docker_env=$(minikube -p "$profile" docker-env --shell bash) ||
  die "minikube docker-env failed (see above), so the images cannot be built inside minikube. It needs minikube's docker runtime (minikube start -p $profile --container-runtime=docker)."
eval "$docker_env"
[[ -n ${DOCKER_HOST:-} ]] || die "minikube docker-env named no Docker daemon (no DOCKER_HOST): the images would land in this machine's Docker"
echo "building images in minikube's Docker daemon ($DOCKER_HOST)"
docker build -f Dockerfile.job -t leafsync.invalid/consumer-job:dev .
docker build -f Dockerfile.api -t leafsync.invalid/consumer-api:dev .

echo "applying $overlay to context $KUBE_CONTEXT"
if grep -q '^kind: Job$' <<<"$rendered"; then
  rerun_job "$namespace" leafsync-reconcile
fi
kube apply -k "$overlay"
apply_monitoring
kube -n "$namespace" rollout restart deployment/consumer-job deployment/consumer-api
wait_for_rollout "$namespace" consumer-job 9100 180s
wait_for_rollout "$namespace" consumer-api 8080 180s
stop_batch_synchronizer "$namespace"

cat <<EOT
leafsync is running in $namespace. Reach the API with a port-forward (it waits until the
API answers /ready before the first request):
  kubectl --context $KUBE_CONTEXT -n $namespace port-forward service/consumer-api $local_port:80 &
  until curl -sf http://127.0.0.1:$local_port/ready; do sleep 1; done
  curl -s http://127.0.0.1:$local_port/image-plant/potato/total
EOT
if grep -q '^kind: Ingress$' <<<"$rendered"; then
  cat <<EOT
or through the nginx Ingress, by its host name:
  curl -s -H 'Host: leafsync.local' http://\$(minikube -p $profile ip)/image-plant/potato/total
EOT
fi
cat <<EOT
Job metrics:
  kubectl --context $KUBE_CONTEXT -n $namespace port-forward service/consumer-job-metrics 9100:9100 &
  curl -s http://127.0.0.1:9100/metrics | grep leafsync_job_images_total
Stop with scripts/stop.dev.sh.
EOT
