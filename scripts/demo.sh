#!/usr/bin/env bash
# The main job on an embedded default: throwaway PostgreSQL and Redis on 127.0.0.1, the sample
# restaurant dataset, then every step of the release cycle that Lifeline has so far.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec node --import tsx scripts/demo.ts "$@"
