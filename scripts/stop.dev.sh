#!/usr/bin/env bash
# Removes what scripts/start.dev.sh applied (only leafsync's objects; LIMS stays).
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
kubectl delete -k "$overlay" --ignore-not-found
echo "leafsync removed from minikube"
