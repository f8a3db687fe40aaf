#!/usr/bin/env bash
# CPU and memory of the release consumer-job binary draining a backlog (README: "vCPU and
# memory, justified"), with the local services up.
# Env: BENCH_EVENTS (3000), BENCH_IMAGE_KB (15); see crates/consumer-job/benches/footprint.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-services.sh cargo bench --locked -p consumer-job --bench footprint
