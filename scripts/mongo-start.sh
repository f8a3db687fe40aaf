#!/usr/bin/env bash
# Installs (once) and starts SecantusDB, a MongoDB-wire-compatible server, on 127.0.0.1.
# Idempotent: if our server already answers on the port, it only says so.
# Env: LEAFSYNC_MONGO_PORT (27017), LEAFSYNC_DATA_DIR (.data/local), LEAFSYNC_RUN_DIR (.run),
#      LEAFSYNC_CACHE_DIR (.cache, holds the venv),
#      LEAFSYNC_MONGO_SYNC_ON_COMMIT (1: fsync the journal on every commit, so writes
#      acknowledged with j:true survive a crash, as on a real MongoDB; 0: faster, weaker).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

venv="$LEAFSYNC_CACHE_DIR/secantus"
server="$venv/bin/secantusd-py"
port=$LEAFSYNC_MONGO_PORT
pidfile="$LEAFSYNC_RUN_DIR/mongo-$port.pid"
logfile="$LEAFSYNC_RUN_DIR/mongo-$port.log"
data="$LEAFSYNC_DATA_DIR/mongo-$port"

stamp="$venv/.installed-$SECANTUS_VERSION"
if [[ ! -x $server || ! -f $stamp ]]; then
  log "installing SecantusDB $SECANTUS_VERSION into $venv (~20 s, once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION"
  touch "$stamp"
fi

mkdir -p "$LEAFSYNC_RUN_DIR" "$data"
if pid_alive "$pidfile" && port_open "$port"; then
  log "MongoDB (SecantusDB) already listening on 127.0.0.1:$port (pid $(cat "$pidfile"))"
  exit 0
fi
if port_open "$port"; then
  die "127.0.0.1:$port is taken by a process this script did not start; set LEAFSYNC_MONGO_PORT"
fi

durability=()
[[ ${LEAFSYNC_MONGO_SYNC_ON_COMMIT:-1} == 1 ]] && durability=(--sync-on-commit)
nohup "$server" --host 127.0.0.1 --port "$port" --storage-path "$data" --standalone \
  --cache-size 256M "${durability[@]}" >"$logfile" 2>&1 </dev/null &
echo $! >"$pidfile"
if ! wait_port "$port" 30 "$(cat "$pidfile")"; then
  tail -n 20 "$logfile" >&2 || true
  rm -f "$pidfile"
  die "SecantusDB did not start on 127.0.0.1:$port (log: $logfile)"
fi
log "MongoDB (SecantusDB $SECANTUS_VERSION) listening on mongodb://127.0.0.1:$port (pid $(cat "$pidfile"), data $data, log $logfile)"
