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
delete_monitoring
echo "leafsync removed; images remain in Artifact Registry"
