#!/usr/bin/env bash
# Removes leafsync's objects from the current GKE cluster (the Ingress's load balancer is
# released with it); LIMS and the pushed images stay.
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/gke}
kubectl delete -k "$overlay" --ignore-not-found
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
batch_synchronizer_hint leaf-image-management-system
kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1 &&
  kubectl delete -k manifests/monitoring --ignore-not-found
echo "leafsync removed; images remain in Artifact Registry"
