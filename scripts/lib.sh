#!/usr/bin/env bash
# Shared helpers for the service scripts: paths, pid files, waiting for a port.
# Sourced, never run. Every path and port can be overridden by the environment.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
: "${LEAFSYNC_CACHE_DIR:=$ROOT/.cache}"
: "${LEAFSYNC_DATA_DIR:=$ROOT/.data/local}"
: "${LEAFSYNC_RUN_DIR:=$ROOT/.run}"
: "${LEAFSYNC_MONGO_PORT:=27017}"
: "${LEAFSYNC_KAFKA_PORT:=9092}"
: "${LEAFSYNC_KAFKA_CONTROLLER_PORT:=$((LEAFSYNC_KAFKA_PORT + 1))}"
: "${LEAFSYNC_TOPICS:=potato tomato pepper}"
: "${LEAFSYNC_TOPIC_PARTITIONS:=3}"
: "${LEAFSYNC_DLQ_TOPIC:=leafsync-dead-letter}"
export SECANTUS_VERSION="0.7.0b3"
# Keep in step with kafka.version in scripts/kafka/pom.xml.
export KAFKA_VERSION="4.1.1"
# Relative overrides are taken from the repository root, whatever the caller's directory.
abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$ROOT" "$1" ;; esac; }
LEAFSYNC_CACHE_DIR=$(abs "$LEAFSYNC_CACHE_DIR")
LEAFSYNC_DATA_DIR=$(abs "$LEAFSYNC_DATA_DIR")
LEAFSYNC_RUN_DIR=$(abs "$LEAFSYNC_RUN_DIR")
export LEAFSYNC_CACHE_DIR LEAFSYNC_DATA_DIR LEAFSYNC_RUN_DIR LEAFSYNC_MONGO_PORT LEAFSYNC_KAFKA_PORT
export LEAFSYNC_KAFKA_CONTROLLER_PORT

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# kraft_cluster_id: a new KRaft cluster id, 16 random bytes in URL-safe base64 without
# padding. One starting with '-' would be read as an option by Kafka's StorageTool (1 draw
# in 64), so it draws again.
kraft_cluster_id() {
  local id=-
  while [[ $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  printf '%s' "$id"
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS PID: wait until PORT answers; fail early if PID died.
wait_port() {
  local port=$1 seconds=$2 pid=${3:-} i
  for ((i = 0; i < seconds * 10; i++)); do
    port_open "$port" && return 0
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# pid_alive FILE: true when FILE names a running process.
pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid NAME FILE: SIGTERM the process in FILE, wait up to 15 s, then SIGKILL.
stop_pid() {
  local name=$1 file=$2 pid i
  if ! pid_alive "$file"; then
    rm -f "$file"
    log "$name is not running (no live pid in $file)"
    return 0
  fi
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  log "stopped $name (pid $pid)"
}

# need_prometheus: `prometheus` and `promtool`, from Debian's `prometheus` package (2.42 on
# Debian 12), installed with apt-get once, when missing (as root, else through sudo). The
# package's service does not start by itself here: nothing runs until a script starts it.
need_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  log "installing Debian's prometheus package for promtool and prometheus (once, ~1 minute)"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null || die "promtool is still missing after installing Debian's prometheus package"
}

# start_prometheus PORT JOB_PORT API_PORT: starts Prometheus on 127.0.0.1:PORT with
# leafsync's alert rules (scripts/prometheus-rules.sh), scraping consumer-job's metrics on
# JOB_PORT and consumer-api's on API_PORT every 5 s under the job names the ServiceMonitors
# give them, with namespace "local". Config and rules in $LEAFSYNC_RUN_DIR/prometheus,
# data in $LEAFSYNC_DATA_DIR/prometheus, log in $LEAFSYNC_RUN_DIR/prometheus.log. Sets
# PROMETHEUS_PID once it answers; stopping it is the caller's (SIGTERM).
start_prometheus() {
  local port=$1 job_port=$2 api_port=$3
  local dir="$LEAFSYNC_RUN_DIR/prometheus" data="$LEAFSYNC_DATA_DIR/prometheus"
  local logfile="$LEAFSYNC_RUN_DIR/prometheus.log"
  need_prometheus
  port_open "$port" && die "127.0.0.1:$port is taken; set LEAFSYNC_PROMETHEUS_PORT"
  mkdir -p "$dir" "$data"
  "$ROOT/scripts/prometheus-rules.sh" "$dir/leafsync-rules.yaml"
  cat >"$dir/prometheus.yml" <<EOT
# Written by scripts/lib.sh (start_prometheus); rewritten on every start.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - leafsync-rules.yaml
scrape_configs:
  - job_name: consumer-job
    static_configs:
      - targets: ["127.0.0.1:$job_port"]
        labels: {namespace: local}
  - job_name: consumer-api
    static_configs:
      - targets: ["127.0.0.1:$api_port"]
        labels: {namespace: local}
EOT
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$data" \
    --web.listen-address="127.0.0.1:$port" >"$logfile" 2>&1 </dev/null &
  PROMETHEUS_PID=$!
  if ! wait_port "$port" 30 "$PROMETHEUS_PID"; then
    kill -TERM "$PROMETHEUS_PID" 2>/dev/null || true
    die "Prometheus did not start (log: $logfile)"
  fi
}

# elapsed: seconds since this shell started, for "took N s" lines.
elapsed() { printf '%d s' "$SECONDS"; }
