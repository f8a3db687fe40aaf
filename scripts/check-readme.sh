#!/usr/bin/env bash
# Runs the README's commands as written (README acceptance: every command works on a
# fresh machine). Every ```sh block in README.md must be preceded by a marker line:
#   <!-- readme-check: run -->              run it (in order, from the repository root)
#   <!-- readme-check: run VAR=value ... --> run it with these variables (smaller sizes)
#   <!-- readme-check: skip REASON -->      cannot run here (needs minikube or GKE)
# A block without a marker fails the check, so no command goes unchecked by accident.
# The run blocks execute while `scripts/run.sh` (LEAFSYNC_SPEEDUP=0) keeps the local
# pipeline up on its default ports; every line must exit 0. Every scripts/*.sh the README
# names must exist, be executable and parse.
set -euo pipefail
# The README's commands run as a reader would type them: with run.sh's default ports and
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
plan="$LEAFSYNC_RUN_DIR/check-readme.plan.sh"

python3 - README.md >"$plan" <<'PY'
import re, shlex, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
out = ["set -euo pipefail"]
i, runs, skips, errors = 0, 0, 0, []
while i < len(lines):
    if lines[i].startswith("```sh"):
        start = i
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        body = "\n".join(lines[i + 1:j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        m = re.fullmatch(r"<!-- readme-check: (run|skip)(.*?) -->", lines[k].strip()) if k >= 0 else None
        if not m:
            errors.append(f"README.md:{start + 1}: a sh block without a readme-check marker")
        elif m.group(1) == "skip":
            if not m.group(2).strip():
                errors.append(f"README.md:{start + 1}: skip needs a reason")
            skips += 1
        else:
            runs += 1
            env = m.group(2).split()
            for e in env:
                if not re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", e):
                    errors.append(f"README.md:{start + 1}: bad variable {e!r}")
            out.append(f"echo {shlex.quote(f'[check-readme] README.md:{start + 1}')} >&2")
            out.append("(")
            out += [f"export {e}" for e in env]
            out.append(body)
            out.append(")")
        i = j + 1
    else:
        i += 1
for path in sorted(set(re.findall(r"\bscripts/[a-z.-]+\.sh\b", "\n".join(lines)))):
    out.append(f"test -x {path} || {{ echo 'README names {path}, which is missing or not executable' >&2; exit 1; }}")
    out.append(f"bash -n {path}")
if errors:
    sys.exit("\n".join(errors))
out.append(f"echo '[check-readme] {runs} block(s) ran, {skips} skipped (need a cluster)' >&2")
print("\n".join(out))
PY

# The README's commands use run.sh's default ports. Unless services already run there,
# they start on throw-away data, so `verify` compares only what these commands produced.
data_dir="$ROOT/.data/readme-check"
pid_alive "$LEAFSYNC_RUN_DIR/mongo-$LEAFSYNC_MONGO_PORT.pid" || rm -rf "$data_dir/mongo-$LEAFSYNC_MONGO_PORT"
pid_alive "$LEAFSYNC_RUN_DIR/kafka-$LEAFSYNC_KAFKA_PORT.pid" || rm -rf "$data_dir/kafka-$LEAFSYNC_KAFKA_PORT"
log "starting the local pipeline (scripts/run.sh, LEAFSYNC_SPEEDUP=0); log: $LEAFSYNC_RUN_DIR/check-readme.run.log"
LEAFSYNC_DATA_DIR="$data_dir" LEAFSYNC_SPEEDUP=0 scripts/run.sh >"$LEAFSYNC_RUN_DIR/check-readme.run.log" 2>&1 &
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
  kill -0 "$run_pid" 2>/dev/null || die "scripts/run.sh exited; see $LEAFSYNC_RUN_DIR/check-readme.run.log"
  sleep 1
done
curl -sf "http://127.0.0.1:$api_port/ready" >/dev/null || die "the pipeline was not ready in 30 minutes"
bash "$plan"
log "every runnable README command worked"
