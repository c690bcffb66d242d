#!/usr/bin/env bash
# Benchmarks, on demand: npm run bench [-- NAME ...]. Prints ratios against the bare tools.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
exec node --import tsx bench/run.ts "$@"
