#!/usr/bin/env bash
# Removes what scripts/start.dev.sh applied (only leafsync's objects; LIMS stays).
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
kubectl delete -k "$overlay" --ignore-not-found
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
batch_synchronizer_hint leaf-image-management-system
kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1 &&
  kubectl delete -k manifests/monitoring --ignore-not-found
echo "leafsync removed from minikube"
