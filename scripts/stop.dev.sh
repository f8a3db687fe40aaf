#!/usr/bin/env bash
# Removes what scripts/start.dev.sh applied (only leafsync's objects; LIMS stays), in
# minikube's context whichever context is current.
# Env: LEAFSYNC_MINIKUBE_PROFILE (minikube), LEAFSYNC_OVERLAY (manifests/overlays/minikube).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
namespace=leaf-image-management-system
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/minikube}
require_tools kubectl
use_minikube_context "${LEAFSYNC_MINIKUBE_PROFILE:-minikube}"
delete_leafsync "$namespace" "$overlay"
batch_synchronizer_hint "$namespace"
echo "leafsync removed from minikube"
