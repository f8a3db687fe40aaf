#!/usr/bin/env bash
# Deploys leafsync to the current GKE cluster (kubectl context) next to LIMS: builds and
# pushes both images to the project's Artifact Registry, lets the nodes pull from it,
# applies the gke overlay with those images, waits for the rollout (saying why when it
# does not finish) and for the Ingress address, prints the curl line.
# Usage: scripts/start.prod.sh PROJECT_ID
# Refuses a context that is not a GKE cluster of PROJECT_ID (gke_PROJECT_ID_…, as
# gcloud container clusters get-credentials names it) unless LEAFSYNC_ALLOW_CONTEXT names it.
# Images are built for linux/amd64 (GKE's nodes), whatever the laptop's CPU, and tagged
# uniquely per deploy (commit, "-dirty-TIMESTAMP" with uncommitted changes), so a
# redeploy of work in progress is never silently the previous image. Once running, LIMS's
# Db Synchronizer is scaled to 0: the stream replaces it (stop.prod.sh says how to undo).
# Env: LEAFSYNC_REGION (europe-west1), LEAFSYNC_REPOSITORY (leafsync),
#      LEAFSYNC_TAG (see above), LEAFSYNC_OVERLAY (manifests/overlays/gke;
#      manifests/examples/gke-keda adds KEDA scaling), LEAFSYNC_ALLOW_CONTEXT (see above).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 1 ]] || { echo "usage: scripts/start.prod.sh PROJECT_ID" >&2; exit 2; }
# shellcheck source=scripts/k8s-lib.sh
source scripts/k8s-lib.sh
project=$1
region=${LEAFSYNC_REGION:-europe-west1}
repository=${LEAFSYNC_REPOSITORY:-leafsync}
tag=${LEAFSYNC_TAG:-$(git rev-parse --short HEAD)}
if [[ -z ${LEAFSYNC_TAG:-} && -n $(git status --porcelain) ]]; then
  tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
fi
overlay=${LEAFSYNC_OVERLAY:-manifests/overlays/gke}
namespace=leaf-image-management-system
registry="$region-docker.pkg.dev/$project/$repository"

require_tools gcloud kubectl docker curl
use_gke_context "$project"
require_namespace "$namespace"
rendered=$(kubectl kustomize "$overlay") || die "cannot render $overlay (see above)"
require_keda "$rendered" "$overlay"

gcloud services enable container.googleapis.com artifactregistry.googleapis.com --project "$project"
gcloud artifacts repositories describe "$repository" --project "$project" --location "$region" >/dev/null ||
  gcloud artifacts repositories create "$repository" --project "$project" --location "$region" --repository-format docker
grant_node_pull "$project" "$region" "$repository"
gcloud auth configure-docker "$region-docker.pkg.dev" --quiet
for component in job api; do
  image="$registry/consumer-$component:$tag"
  echo "building and pushing $image"
  docker build --platform linux/amd64 -f "Dockerfile.$component" -t "$image" .
  docker push "$image"
done

# A throw-away overlay on top of the chosen one that names the pushed images.
work=$(mktemp -d "$PWD/manifests/.deploy-XXXXXX")
trap 'rm -rf "$work"' EXIT
cat >"$work/kustomization.yaml" <<EOT
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../$overlay
images:
  - name: leafsync.invalid/consumer-job
    newName: $registry/consumer-job
    newTag: "$tag"
  - name: leafsync.invalid/consumer-api
    newName: $registry/consumer-api
    newTag: "$tag"
EOT
if grep -q '^kind: Job$' <<<"$rendered"; then
  rerun_job "$namespace" leafsync-reconcile
fi
kube apply -k "$work"
apply_monitoring
wait_for_rollout "$namespace" consumer-job 9100 300s
wait_for_rollout "$namespace" consumer-api 8080 300s
stop_batch_synchronizer "$namespace"

echo "waiting for the Ingress address (a new GKE load balancer takes a few minutes)"
address=""
for _ in $(seq 1 60); do
  address=$(kube -n "$namespace" get ingress consumer-api -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
  [[ -n $address ]] && break
  sleep 10
done
[[ -n $address ]] || die "no Ingress address after 10 minutes; check: kubectl --context $KUBE_CONTEXT -n $namespace describe ingress consumer-api"
cat <<EOT
leafsync is running on GKE. The API's only entry point is its Ingress:
  curl -s http://$address/image-plant/potato/total
  curl -s http://$address/image-plant/potato/1
(The load balancer may answer 502 for a few more minutes while its health checks on /ready pass.)
Stop with scripts/stop.prod.sh $project.
EOT
