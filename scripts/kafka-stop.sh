#!/usr/bin/env bash
# Stops the Kafka broker that scripts/kafka-start.sh started on LEAFSYNC_KAFKA_PORT (by its
# pid file: nothing else is touched). SIGTERM lets it shut down cleanly (a few seconds).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
stop_pid "Kafka on port $LEAFSYNC_KAFKA_PORT" "$LEAFSYNC_RUN_DIR/kafka-$LEAFSYNC_KAFKA_PORT.pid"
