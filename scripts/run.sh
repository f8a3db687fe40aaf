#!/usr/bin/env bash
# The local pipeline (README: "Run"): SecantusDB + Apache Kafka on 127.0.0.1, then
# consumer-job, consumer-api and the LIMS simulator (cargo profile `local`: the quickest
# build). Prints what to try and a progress line every 5 s, with the seconds since start;
# ctrl-c stops everything it started.
# Data persists in .data/local between runs (delete it for a clean slate).
# Env: LEAFSYNC_MONGO_PORT (27017), LEAFSYNC_KAFKA_PORT (9092), LEAFSYNC_API_PORT (8080),
#      LEAFSYNC_API_PROBE_PORT (8081), LEAFSYNC_JOB_METRICS_PORT (9100), LEAFSYNC_SPEEDUP (100: LIMS's job rates x100;
#      0: no simulator), LEAFSYNC_RUN_SECONDS (unset: until ctrl-c),
#      LEAFSYNC_PROMETHEUS (0; 1: also a Prometheus with leafsync's alert rules scraping
#      both binaries, see start_prometheus in lib.sh), LEAFSYNC_PROMETHEUS_PORT (9090).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
api_port=${LEAFSYNC_API_PORT:-8080}
api_probe_port=${LEAFSYNC_API_PROBE_PORT:-8081}
job_port=${LEAFSYNC_JOB_METRICS_PORT:-9100}
prometheus_port=${LEAFSYNC_PROMETHEUS_PORT:-9090}
with_prometheus=${LEAFSYNC_PROMETHEUS:-0}

started=()
pids=()
cleanup() {
  local status=$? pid service
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for service in "${started[@]}"; do "$ROOT/scripts/$service-stop.sh" || true; done
  log "pipeline stopped"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# The build (the longest step on a new machine) runs while the services install
# and start; its output goes to a log, and a failure stops here with its tail.
mkdir -p "$LEAFSYNC_RUN_DIR"
build_log="$LEAFSYNC_RUN_DIR/build.log"
log "building consumer-job, consumer-api and lims-sim (profile local; log: $build_log) while the services start"
cargo build --profile local --locked -p consumer-job -p consumer-api -p lims-sim --bins --examples \
  >"$build_log" 2>&1 &
build_pid=$!
# Installed (once) while the build runs; started once the binaries answer.
[[ $with_prometheus == 1 ]] && need_prometheus
for service in mongo kafka; do
  port=$LEAFSYNC_MONGO_PORT
  [[ $service == kafka ]] && port=$LEAFSYNC_KAFKA_PORT
  pid_alive "$LEAFSYNC_RUN_DIR/$service-$port.pid" || started+=("$service")
  "$ROOT/scripts/$service-start.sh"
done
if ! wait "$build_pid"; then
  tail -n 30 "$build_log" >&2
  die "the build failed (log: $build_log)"
fi
log "built ($(elapsed) since start)"
export LEAFSYNC_KAFKA_BROKERS="127.0.0.1:$LEAFSYNC_KAFKA_PORT"
export LEAFSYNC_MONGO_URI="mongodb://127.0.0.1:$LEAFSYNC_MONGO_PORT"
export LEAFSYNC_METRICS_ADDR="127.0.0.1:$job_port"
export LEAFSYNC_API_ADDR="127.0.0.1:$api_port"
export LEAFSYNC_PROBE_ADDR="127.0.0.1:$api_probe_port"
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}

"$target_dir/local/consumer-job" >"$LEAFSYNC_RUN_DIR/consumer-job.log" 2>&1 &
pids+=($!)
"$target_dir/local/consumer-api" >"$LEAFSYNC_RUN_DIR/consumer-api.log" 2>&1 &
pids+=($!)
wait_port "$job_port" 30 "${pids[0]}" || die "consumer-job did not start (log: $LEAFSYNC_RUN_DIR/consumer-job.log)"
wait_port "$api_port" 30 "${pids[1]}" || die "consumer-api did not start (log: $LEAFSYNC_RUN_DIR/consumer-api.log)"
speedup=${LEAFSYNC_SPEEDUP:-100}
if [[ $speedup != 0 ]]; then
  "$target_dir/local/lims-sim" simulate --speedup "$speedup" >"$LEAFSYNC_RUN_DIR/lims-sim.log" 2>&1 &
  pids+=($!)
  log "LIMS simulator running at ${speedup}x LIMS's rates (log: $LEAFSYNC_RUN_DIR/lims-sim.log)"
fi
if [[ $with_prometheus == 1 ]]; then
  start_prometheus "$prometheus_port" "$job_port" "$api_port"
  pids+=("$PROMETHEUS_PID")
  prometheus_url="http://127.0.0.1:$prometheus_port"
  # Debian's package serves the classic UI only, under /classic.
  alerts_page="$prometheus_url/alerts"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "$prometheus_url/classic/alerts") == 200 ]] &&
    alerts_page="$prometheus_url/classic/alerts"
  log "Prometheus running with leafsync's alert rules (log: $LEAFSYNC_RUN_DIR/prometheus.log)"
fi

cat <<EOT

leafsync is running (logs in $LEAFSYNC_RUN_DIR/consumer-job.log and consumer-api.log).
Send an event:
  echo '{"id": 1, "camera_id": 1, "data": "ffd8ffe0", "gps_coordinates": [48.47, 16.58], "created_at": "2023-10-08T15:39:49.123123", "updated_at": null, "is_active": false, "is_deleted": false, "disease": null, "percentage": null}' \\
    | LEAFSYNC_KAFKA_BROKERS=$LEAFSYNC_KAFKA_BROKERS $target_dir/local/examples/send_event potato
Read it back:
  curl -s http://127.0.0.1:$api_port/image-plant/potato/1
  curl -s http://127.0.0.1:$api_port/image-plant/potato/total
  curl -s http://127.0.0.1:$api_port/ready
Metrics:
  curl -s http://127.0.0.1:$job_port/metrics | grep leafsync_job_images_total
  curl -s http://127.0.0.1:$api_port/metrics | grep leafsync_api_requests_total
Compare producer and consumer DBs:
  LEAFSYNC_MONGO_URI=$LEAFSYNC_MONGO_URI $target_dir/local/lims-sim verify
Press ctrl-c to stop.
EOT
if [[ $with_prometheus == 1 ]]; then
  printf 'Prometheus (scrapes both every 5 s, alert rules loaded): %s\n  alerts: %s\n' \
    "$prometheus_url" "$alerts_page"
fi

# metric NAME [LABEL_FILTER]: the sum of a job metric's samples (0 when absent).
metric() {
  curl -s "http://127.0.0.1:$job_port/metrics" |
    awk -v name="$1" -v filter="${2:-}" '$1 ~ "^"name"({|$)" && index($1, filter) { sum += $2 } END { printf "%d", sum }'
}
# produced: the simulator's last reported count of published records ("-" before its
# first report, or with no simulator).
produced() {
  local count
  count=$(grep -o 'published=[0-9]*' "$LEAFSYNC_RUN_DIR/lims-sim.log" 2>/dev/null | tail -n 1 | cut -d= -f2 || true)
  printf '%s' "${count:--}"
}
progress() {
  while sleep 5; do
    printf '[run.sh] %4ss | produced %s | consumed %s | inserted %s updated %s unchanged %s stale %s | dead-lettered %s | lag %s\n' \
      "$SECONDS" "$(produced)" \
      "$(metric leafsync_job_events_consumed_total)" \
      "$(metric leafsync_job_images_total 'outcome="inserted"')" \
      "$(metric leafsync_job_images_total 'outcome="updated"')" \
      "$(metric leafsync_job_images_total 'outcome="unchanged"')" \
      "$(metric leafsync_job_images_total 'outcome="stale"')" \
      "$(metric leafsync_job_dead_lettered_total)" \
      "$(metric leafsync_job_consumer_lag)"
  done
}
progress &
pids+=($!)

if [[ -n ${LEAFSYNC_RUN_SECONDS:-} ]]; then
  sleep "$LEAFSYNC_RUN_SECONDS"
else
  wait -n "${pids[0]}" "${pids[1]}" || true
  log "a binary exited on its own; stopping the pipeline"
fi
