#!/usr/bin/env bash
# Shared by the start/stop scripts that deploy to a cluster. Sourced, never run.

# stop_batch_synchronizer NAMESPACE: scales LIMS's Db Synchronizer to 0 replicas. Both it
# and consumer-job write the consumer DB; once the stream runs, the batch copy must stop.
# Its deployment is found by name (anything containing db-synchronizer).
stop_batch_synchronizer() {
  local namespace=$1 deployments
  deployments=$(kubectl -n "$namespace" get deployments -o name | grep db-synchronizer || true)
  if [[ -z $deployments ]]; then
    echo "no Db Synchronizer deployment found in $namespace: nothing to stop"
    return 0
  fi
  for deployment in $deployments; do
    kubectl -n "$namespace" scale "$deployment" --replicas=0
    echo "stopped LIMS's $deployment (the stream replaces it); bring it back with: kubectl -n $namespace scale $deployment --replicas=1"
  done
}

# batch_synchronizer_hint NAMESPACE: how to bring the Db Synchronizer back.
batch_synchronizer_hint() {
  local namespace=$1 deployment
  for deployment in $(kubectl -n "$namespace" get deployments -o name | grep db-synchronizer || true); do
    echo "LIMS's $deployment stays at 0 replicas; if no stream replaces it, bring it back: kubectl -n $namespace scale $deployment --replicas=1"
  done
}

# monitoring_crds: true when the cluster has both Prometheus Operator CRDs that
# manifests/monitoring uses (kube-prometheus-stack installs them together; one `get` of
# both fails if either is missing, and applying with one missing would half-apply).
monitoring_crds() {
  kubectl get crd servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com >/dev/null 2>&1
}

# apply_monitoring: the ServiceMonitors and alert rules, only where the Prometheus
# Operator's CRDs exist (kube-prometheus-stack); otherwise say how to add them later.
apply_monitoring() {
  if monitoring_crds; then
    kubectl apply -k manifests/monitoring
  else
    echo "no ServiceMonitor/PrometheusRule CRDs yet: once kube-prometheus-stack is installed, run kubectl apply -k manifests/monitoring"
  fi
}

# delete_monitoring: removes the ServiceMonitors and alert rules if the CRDs (and so they)
# can exist.
delete_monitoring() {
  if monitoring_crds; then
    kubectl delete -k manifests/monitoring --ignore-not-found
  fi
}
