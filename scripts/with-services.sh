#!/usr/bin/env bash
# Runs a command with the local test services up: starts SecantusDB and Kafka (on test
# ports, throwaway data) unless they already run, exports their addresses as
# LEAFSYNC_TEST_MONGO_URI / LEAFSYNC_TEST_KAFKA_BROKERS / LEAFSYNC_TEST_SECANTUS_BIN,
# runs "$@", and stops only what it started, whatever the command's outcome.
# Env: LEAFSYNC_TEST_MONGO_PORT (37017), LEAFSYNC_TEST_KAFKA_PORT (39092),
#      LEAFSYNC_TEST_DATA_DIR (.data/test).
set -euo pipefail
export LEAFSYNC_MONGO_PORT=${LEAFSYNC_TEST_MONGO_PORT:-37017}
export LEAFSYNC_KAFKA_PORT=${LEAFSYNC_TEST_KAFKA_PORT:-39092}
export LEAFSYNC_DATA_DIR=${LEAFSYNC_TEST_DATA_DIR:-.data/test}
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
[[ $# -gt 0 ]] || die "usage: scripts/with-services.sh COMMAND [ARGS...]"

started=()
cleanup() {
  local status=$? service
  for service in "${started[@]}"; do
    "$ROOT/scripts/$service-stop.sh" || true
  done
  exit "$status"
}
trap cleanup EXIT

declare -A ports=([mongo]=$LEAFSYNC_MONGO_PORT [kafka]=$LEAFSYNC_KAFKA_PORT)
for service in mongo kafka; do
  if ! pid_alive "$LEAFSYNC_RUN_DIR/$service-${ports[$service]}.pid"; then
    # Test data is throwaway: every run that starts a service starts it empty.
    rm -rf "$LEAFSYNC_DATA_DIR/$service-${ports[$service]}"
    started+=("$service")
  fi
  "$ROOT/scripts/$service-start.sh"
done

export LEAFSYNC_TEST_MONGO_URI="mongodb://127.0.0.1:$LEAFSYNC_MONGO_PORT"
export LEAFSYNC_TEST_KAFKA_BROKERS="127.0.0.1:$LEAFSYNC_KAFKA_PORT"
export LEAFSYNC_TEST_SECANTUS_BIN="$LEAFSYNC_CACHE_DIR/secantus/bin/secantusd-py"
"$@"
