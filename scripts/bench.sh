#!/usr/bin/env bash
# Runs one benchmark with the local services up (docs/assignment.md: "Benchmarks"); each
# prints its figures and the neutral references it measured in the same run.
#   scripts/bench.sh throughput   job vs broker and database ceilings, per-message baseline
#   scripts/bench.sh rate         open-loop load at rising rates: latency and backlog
#   scripts/bench.sh footprint    CPU and memory of the release consumer-job binary
#   scripts/bench.sh large-records  the same draining 50 records of 8 MiB, against the limit
#   scripts/bench.sh reconcile    reconcile's memory and speed, 100,000 consumer-only images
#   scripts/bench.sh api          consumer-api under load vs the database alone
# Knobs (BENCH_*) are described at the top of each bench's source under crates/*/benches/.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  throughput | rate | footprint | reconcile) args=(-p consumer-job --bench "$1") ;;
  large-records)
    export BENCH_EVENTS=${BENCH_EVENTS:-50} BENCH_IMAGE_KB=${BENCH_IMAGE_KB:-4096}
    args=(-p consumer-job --bench footprint)
    ;;
  api) args=(-p consumer-api --bench load) ;;
  *)
    echo "usage: scripts/bench.sh throughput|rate|footprint|large-records|reconcile|api" >&2
    exit 2
    ;;
esac
exec scripts/with-services.sh cargo bench --locked "${args[@]}"
