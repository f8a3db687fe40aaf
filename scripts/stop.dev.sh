#!/usr/bin/env bash
# Removes what scripts/start.dev.sh applied (only leafsync's objects; LIMS stays).
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
kubectl delete -k "$overlay" --ignore-not-found
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
batch_synchronizer_hint leaf-image-management-system
delete_monitoring
echo "leafsync removed from minikube"
