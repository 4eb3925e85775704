#!/usr/bin/env bash
# npm run demo: install what is missing, bring up PostgreSQL and Kafka, run the demo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/ensure.sh
set -a
eval "$(bash scripts/services.sh up)"
set +a
exec node --import tsx examples/demo.ts "$@"
