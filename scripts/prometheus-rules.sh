#!/usr/bin/env bash
# Writes leafsync's alert and recording rules as a plain Prometheus rules file to OUT:
# the `spec` of manifests/monitoring/prometheusrule.yaml (the only copy of the rules),
# de-indented. Used by scripts/lint.sh (promtool), `LEAFSYNC_PROMETHEUS=1 scripts/run.sh`
# and tests that run a real Prometheus.
# Usage: scripts/prometheus-rules.sh OUT
# Plain text on purpose (no YAML parser needed): `spec:` is the manifest's last top-level
# key, so its block is every line after it, two spaces less indented. lint.sh checks the
# result against the parsed manifest and with promtool.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
[[ $# == 1 ]] || die "usage: $0 OUT"
manifest="$ROOT/manifests/monitoring/prometheusrule.yaml"
out=$1
mkdir -p "$(dirname "$out")"
awk '
  /^spec:[[:space:]]*$/ { inside = 1; next }
  !inside { next }
  /^  / { print substr($0, 3); next }
  /^[[:space:]]*$/ || /^#/ { print; next }
  { exit }
' "$manifest" >"$out"
grep -q '^groups:' "$out" || die "no spec.groups found in $manifest"
