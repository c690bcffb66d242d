#!/usr/bin/env bash
# The whole test suite, on real PostgreSQL, Redis, pgBackRest and Docker. Installs what is missing.
# Usage: npm test [-- vitest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/node_modules/.bin:$PATH"
report=$(mktemp /tmp/lifeline-vitest-XXXXXX.json)
trap 'rm -f "$report"' EXIT
status=0
node node_modules/vitest/vitest.mjs run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
# One plain closing line that any CI can read.
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + (r.numTodoTests ?? 0)} skipped`);
' "$report" 2>/dev/null || echo "tests: 0 passed, 1 failed"
exit "$status"
