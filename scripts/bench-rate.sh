#!/usr/bin/env bash
# The job under rising event rates (README: "What happens when the event rate rises"),
# with the local services up.
# Env: BENCH_RATES (5,50,150,300,450 events/s), BENCH_STEP_SECONDS (20), BENCH_REPLICAS (1);
# see crates/consumer-job/benches/rate.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-services.sh cargo bench --locked -p consumer-job --bench rate
