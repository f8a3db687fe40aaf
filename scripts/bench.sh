#!/usr/bin/env bash
# The job's throughput benchmark (README: "Benchmarks"), with the local services up.
# Env: BENCH_EVENTS (3000), BENCH_IMAGE_KB (15); see crates/consumer-job/benches/throughput.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-services.sh cargo bench --locked -p consumer-job --bench throughput
