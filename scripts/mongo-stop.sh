#!/usr/bin/env bash
# Stops the SecantusDB server that scripts/mongo-start.sh started on LEAFSYNC_MONGO_PORT.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
stop_pid "MongoDB (SecantusDB) on port $LEAFSYNC_MONGO_PORT" "$LEAFSYNC_RUN_DIR/mongo-$LEAFSYNC_MONGO_PORT.pid"
