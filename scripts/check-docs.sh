#!/usr/bin/env bash
# Runs the documents' commands as written (README acceptance: every command works on a
# fresh machine): every ```sh block of README.md, ARCHITECTURE.md and docs/*.md, in that
# order. Each block must be preceded by a marker line (scripts/docs-plan.py, which
# writes the plan, explains them):
#   <!-- readme-check: run -->              run it (in order, from the repository root)
#   <!-- readme-check: run VAR=value ... --> run it with these variables (smaller sizes)
#   <!-- readme-check: skip REASON -->      cannot run here (needs minikube or GKE)
# A block without a marker fails the check, so no command goes unchecked by accident.
# The run blocks execute while `scripts/run.sh` (LEAFSYNC_SPEEDUP=0) keeps the local
# pipeline up on its default ports; every line must exit 0. Every scripts/*.sh the
# documents name must exist, be executable and parse.
set -euo pipefail
# The documents' commands run as a reader would type them: with run.sh's default ports and
# none of the caller's LEAFSYNC_* settings (test.sh calls this with the test ports set),
# except where the cache lives and the test services' addresses (used by the benchmarks).
while read -r var; do
  case $var in
    LEAFSYNC_CACHE_DIR | LEAFSYNC_TEST_*) ;;
    LEAFSYNC_*) unset "$var" ;;
  esac
done < <(compgen -e)
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
mkdir -p "$LEAFSYNC_RUN_DIR"
plan="$LEAFSYNC_RUN_DIR/check-docs.plan.sh"

# The documents, in reading order: the README, ARCHITECTURE.md, then docs/*.md.
docs=(README.md ARCHITECTURE.md docs/*.md)
python3 scripts/docs-plan.py "${docs[@]}" >"$plan"

# The documents' commands use run.sh's default ports. Unless services already run there,
# they start on throw-away data, so `verify` compares only what these commands produced.
data_dir="$ROOT/.data/docs-check"
pid_alive "$LEAFSYNC_RUN_DIR/mongo-$LEAFSYNC_MONGO_PORT.pid" || rm -rf "$data_dir/mongo-$LEAFSYNC_MONGO_PORT"
pid_alive "$LEAFSYNC_RUN_DIR/kafka-$LEAFSYNC_KAFKA_PORT.pid" || rm -rf "$data_dir/kafka-$LEAFSYNC_KAFKA_PORT"
log "starting the local pipeline (scripts/run.sh, LEAFSYNC_SPEEDUP=0); log: $LEAFSYNC_RUN_DIR/check-docs.run.log"
LEAFSYNC_DATA_DIR="$data_dir" LEAFSYNC_SPEEDUP=0 scripts/run.sh >"$LEAFSYNC_RUN_DIR/check-docs.run.log" 2>&1 &
run_pid=$!
stop_run() {
  local status=$?
  kill -TERM "$run_pid" 2>/dev/null || true
  wait "$run_pid" 2>/dev/null || true
  exit "$status"
}
trap stop_run EXIT
api_port=${LEAFSYNC_API_PORT:-8080}
for ((i = 0; i < 1800; i++)); do
  curl -sf "http://127.0.0.1:$api_port/ready" >/dev/null 2>&1 && break
  kill -0 "$run_pid" 2>/dev/null || die "scripts/run.sh exited; see $LEAFSYNC_RUN_DIR/check-docs.run.log"
  sleep 1
done
curl -sf "http://127.0.0.1:$api_port/ready" >/dev/null || die "the pipeline was not ready in 30 minutes"
bash "$plan"
log "every runnable command of the documents worked"
