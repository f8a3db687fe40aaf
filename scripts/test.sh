#!/usr/bin/env bash
# The project's test command (README: "Test"). Starts the local services the tests need
# (SecantusDB and tansu, on test ports with throwaway data) unless they already run, runs
# cargo fmt --check, clippy -D warnings and cargo test --workspace, then stops what it started.
# Env: LEAFSYNC_TEST_MONGO_PORT (37017), LEAFSYNC_TEST_KAFKA_PORT (39092),
#      LEAFSYNC_TEST_DATA_DIR (.data/test); extra arguments go to `cargo test`.
set -euo pipefail
export LEAFSYNC_MONGO_PORT=${LEAFSYNC_TEST_MONGO_PORT:-37017}
export LEAFSYNC_KAFKA_PORT=${LEAFSYNC_TEST_KAFKA_PORT:-39092}
export LEAFSYNC_DATA_DIR=${LEAFSYNC_TEST_DATA_DIR:-.data/test}
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

started=()
cleanup() {
  local status=$? service
  for service in "${started[@]}"; do
    "$ROOT/scripts/$service-stop.sh" || true
  done
  exit "$status"
}
trap cleanup EXIT

for service in mongo kafka; do
  if ! pid_alive "$LEAFSYNC_RUN_DIR/$service-$(if [[ $service == mongo ]]; then echo "$LEAFSYNC_MONGO_PORT"; else echo "$LEAFSYNC_KAFKA_PORT"; fi).pid"; then
    # Test data is throwaway: every run starts from empty stores.
    rm -rf "$LEAFSYNC_DATA_DIR/$service-"*
    started+=("$service")
  fi
  "$ROOT/scripts/$service-start.sh"
done

export LEAFSYNC_TEST_MONGO_URI="mongodb://127.0.0.1:$LEAFSYNC_MONGO_PORT"
export LEAFSYNC_TEST_KAFKA_BROKERS="127.0.0.1:$LEAFSYNC_KAFKA_PORT"
export LEAFSYNC_TEST_SECANTUS_BIN="$LEAFSYNC_CACHE_DIR/secantus/bin/secantusd-py"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test --workspace (Mongo $LEAFSYNC_TEST_MONGO_URI, Kafka $LEAFSYNC_TEST_KAFKA_BROKERS)"
cargo test --workspace --locked "$@"
