#!/usr/bin/env bash
# consumer-api's load benchmark (README: "Benchmarks"), with the local services up.
# Env: BENCH_CONNECTIONS (64), BENCH_SECONDS (10); see crates/consumer-api/benches/load.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-services.sh cargo bench --locked -p consumer-api --bench load
