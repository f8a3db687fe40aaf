#!/usr/bin/env bash
# Deploys leafsync into a running minikube next to LIMS: builds both images inside
# minikube's Docker daemon, applies manifests/overlays/minikube, waits for the rollout and
# prints how to reach the API (port-forward; no Ingress needed). Once it runs, LIMS's Db
# Synchronizer is scaled to 0: both would write the consumer DB (stop.dev.sh says how to undo).
# Env: LEAFSYNC_OVERLAY (manifests/overlays/minikube; e.g. manifests/examples/minikube-ingress),
#      LEAFSYNC_API_LOCAL_PORT (8090).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
namespace=leaf-image-management-system
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
local_port=${LEAFSYNC_API_LOCAL_PORT:-8090}

for tool in minikube kubectl docker; do
  command -v "$tool" >/dev/null || { echo "start.dev.sh: $tool is required" >&2; exit 1; }
done
minikube status >/dev/null || { echo "start.dev.sh: minikube is not running (minikube start)" >&2; exit 1; }
kubectl get namespace "$namespace" >/dev/null ||
  { echo "start.dev.sh: namespace $namespace not found: deploy LIMS first" >&2; exit 1; }

# The API's HPA reads CPU from metrics-server; the Ingress example needs the nginx addon.
minikube addons enable metrics-server
[[ $overlay == *ingress* ]] && minikube addons enable ingress

echo "building images in minikube's Docker daemon"
eval "$(minikube docker-env)"
docker build -f Dockerfile.job -t leafsync.invalid/consumer-job:dev .
docker build -f Dockerfile.api -t leafsync.invalid/consumer-api:dev .

echo "applying $overlay"
kubectl apply -k "$overlay"
apply_monitoring
kubectl -n "$namespace" rollout restart deployment/consumer-job deployment/consumer-api
kubectl -n "$namespace" rollout status deployment/consumer-job --timeout=180s
kubectl -n "$namespace" rollout status deployment/consumer-api --timeout=180s
stop_batch_synchronizer "$namespace"

cat <<EOT
leafsync is running in $namespace. Reach the API with a port-forward (it waits until the
API answers /ready before the first request):
  kubectl -n $namespace port-forward service/consumer-api $local_port:80 &
  until curl -sf http://127.0.0.1:$local_port/ready; do sleep 1; done
  curl -s http://127.0.0.1:$local_port/image-plant/potato/total
EOT
if [[ $overlay == *ingress* ]]; then
  cat <<EOT
or through the nginx Ingress, by its host name:
  curl -s -H 'Host: leafsync.local' http://\$(minikube ip)/image-plant/potato/total
EOT
fi
cat <<EOT
Job metrics:
  kubectl -n $namespace port-forward service/consumer-job-metrics 9100:9100 &
  curl -s http://127.0.0.1:9100/metrics | grep leafsync_job_images_total
Stop with scripts/stop.dev.sh.
EOT
