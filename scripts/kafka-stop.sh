#!/usr/bin/env bash
# Stops the tansu broker that scripts/kafka-start.sh started on LEAFSYNC_KAFKA_PORT.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
stop_pid "Kafka (tansu) on port $LEAFSYNC_KAFKA_PORT" "$LEAFSYNC_RUN_DIR/kafka-$LEAFSYNC_KAFKA_PORT.pid"
