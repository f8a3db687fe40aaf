#!/usr/bin/env bash
# Removes leafsync's objects from the GKE cluster of the current kubectl context (the
# Ingress's load balancer is released with it); LIMS and the pushed images stay.
# Usage: scripts/stop.prod.sh PROJECT_ID
# Refuses a context that is not a GKE cluster of PROJECT_ID (gke_PROJECT_ID_…) unless
# LEAFSYNC_ALLOW_CONTEXT names it. Env: LEAFSYNC_OVERLAY (manifests/overlays/gke).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 1 ]] || { echo "usage: scripts/stop.prod.sh PROJECT_ID" >&2; exit 2; }
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
namespace=leaf-image-management-system
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/gke}
require_tools kubectl
use_gke_context "$1"
delete_leafsync "$namespace" "$overlay"
batch_synchronizer_hint "$namespace"
echo "leafsync removed from $KUBE_CONTEXT; images remain in Artifact Registry"
