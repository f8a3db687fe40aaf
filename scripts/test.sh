#!/usr/bin/env bash
# The project's test command (README: "Test"): the offline non-Rust checks
# (scripts/lint.sh: hadolint, shellcheck, manifests, GitLab CI schema), then, with the
# local services up (see scripts/with-services.sh), cargo fmt --check, clippy -D warnings
# and cargo test --workspace; extra arguments go to `cargo test`. Finally
# scripts/check-docs.sh runs the commands of README.md, ARCHITECTURE.md and docs/*.md
# (LEAFSYNC_SKIP_README_CHECK=1 skips it).
# LEAFSYNC_SKIP_LINT=1 leaves out lint.sh, fmt and clippy (CI: its lint stage ran them).
# One test runs a real Prometheus (tools/repo-checks/tests/prometheus.rs): Debian's
# prometheus package is installed first when missing (need_prometheus in lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# In a subshell: lib.sh's port defaults must not leak into with-services.sh.
# shellcheck source=scripts/lib.sh
(source scripts/lib.sh && need_prometheus)
if [[ ${LEAFSYNC_SKIP_LINT:-0} != 1 ]]; then
  scripts/lint.sh
fi
# The inner script expands its variables itself, after with-services.sh exported them.
# shellcheck disable=SC2016
exec scripts/with-services.sh bash -c '
  set -euo pipefail
  if [[ ${LEAFSYNC_SKIP_LINT:-0} != 1 ]]; then
    echo "[test.sh] cargo fmt --check" >&2
    cargo fmt --all -- --check
    echo "[test.sh] cargo clippy --all-targets -D warnings" >&2
    cargo clippy --workspace --all-targets --locked -- -D warnings
  fi
  echo "[test.sh] cargo test --workspace (Mongo $LEAFSYNC_TEST_MONGO_URI, Kafka $LEAFSYNC_TEST_KAFKA_BROKERS)" >&2
  cargo test --workspace --locked "$@"
  if [[ ${LEAFSYNC_SKIP_README_CHECK:-0} != 1 ]]; then
    echo "[test.sh] scripts/check-docs.sh" >&2
    scripts/check-docs.sh
  fi
' test.sh "$@"
