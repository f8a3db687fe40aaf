#!/usr/bin/env bash
# Installs (once; ~17 min cold) and starts tansu, a Kafka-protocol broker, on 127.0.0.1 with
# sqlite storage, then creates the LIMS topics and the dead-letter topic.
# Idempotent: if our broker already answers on the port, it only (re)checks the topics.
# Env: LEAFSYNC_KAFKA_PORT (9092), LEAFSYNC_DATA_DIR (.data/local), LEAFSYNC_RUN_DIR (.run),
#      LEAFSYNC_TOPICS ("potato tomato pepper"), LEAFSYNC_TOPIC_PARTITIONS (3),
#      LEAFSYNC_DLQ_TOPIC (leafsync-dead-letter).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

tansu="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
port=$LEAFSYNC_KAFKA_PORT
url="tcp://127.0.0.1:$port"
pidfile="$LEAFSYNC_RUN_DIR/kafka-$port.pid"
logfile="$LEAFSYNC_RUN_DIR/kafka-$port.log"
data="$LEAFSYNC_DATA_DIR/kafka-$port"

if [[ "$("$tansu" --version 2>/dev/null || true)" != "tansu $TANSU_VERSION" ]]; then
  log "building tansu $TANSU_VERSION with cargo install (~17 min on 2 cores, once per machine)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
fi

mkdir -p "$LEAFSYNC_RUN_DIR" "$data"
if pid_alive "$pidfile" && port_open "$port"; then
  log "Kafka (tansu) already listening on 127.0.0.1:$port (pid $(cat "$pidfile"))"
else
  if port_open "$port"; then
    die "127.0.0.1:$port is taken by a process this script did not start; set LEAFSYNC_KAFKA_PORT"
  fi
  # tansu resolves sqlite paths relative to its working directory: start it inside $data.
  (
    cd "$data"
    exec nohup "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine sqlite://tansu.db >"$logfile" 2>&1 </dev/null
  ) &
  echo $! >"$pidfile"
  if ! wait_port "$port" 60 "$(cat "$pidfile")"; then
    tail -n 20 "$logfile" >&2 || true
    rm -f "$pidfile"
    die "tansu did not start on 127.0.0.1:$port (log: $logfile)"
  fi
fi

# Topics are not auto-created by tansu. A re-run answers "already exists": that is fine.
for topic in $LEAFSYNC_TOPICS "$LEAFSYNC_DLQ_TOPIC"; do
  partitions=$LEAFSYNC_TOPIC_PARTITIONS
  [[ $topic == "$LEAFSYNC_DLQ_TOPIC" ]] && partitions=1
  if out=$("$tansu" topic create --broker "$url" --partitions "$partitions" "$topic" 2>&1); then
    log "created topic $topic ($partitions partitions)"
  elif grep -qi "already exists\|TopicAlreadyExists" <<<"$out"; then
    :
  else
    printf '%s\n' "$out" >&2
    die "could not create topic $topic on $url"
  fi
done
log "Kafka (tansu $TANSU_VERSION) listening on 127.0.0.1:$port (pid $(cat "$pidfile"), data $data, log $logfile); topics: $LEAFSYNC_TOPICS $LEAFSYNC_DLQ_TOPIC"
