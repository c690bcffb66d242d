#!/usr/bin/env bash
# The call check of every Lifeline workflow job (see action.yml beside it). Exit 2: the call is
# wrong and nothing was changed; the ::error:: line says how to fix it.
set -euo pipefail

fail() {
  echo "::error::$1"
  exit 2
}

if [ -n "$LIFELINE_REF" ] && ! [[ $LIFELINE_REF =~ ^[0-9a-f]{40}$ ]]; then
  fail "lifeline-ref \"$LIFELINE_REF\" is not a full 40-character commit SHA: pin the same SHA as in your uses: line"
fi
# GitHub names the commit a reusable workflow really runs from; the caller's lifeline-ref must be it,
# or the jobs would run other actions than the workflow the caller reviewed.
if [ -n "$WORKFLOW_SHA" ] && [ -n "$LIFELINE_REF" ] && [ "$WORKFLOW_SHA" != "$LIFELINE_REF" ]; then
  fail "lifeline-ref is $LIFELINE_REF, but this workflow runs from Lifeline commit $WORKFLOW_SHA: set lifeline-ref to the SHA in your uses: line"
fi
if [ -n "$WORKFLOW_REPOSITORY" ] && [ -n "$LIFELINE_REPOSITORY" ] && [ "${WORKFLOW_REPOSITORY,,}" != "${LIFELINE_REPOSITORY,,}" ]; then
  fail "lifeline-repository is $LIFELINE_REPOSITORY, but this workflow comes from $WORKFLOW_REPOSITORY: set lifeline-repository to the repository in your uses: line"
fi

database=""
if [ -n "$DATABASE_URL" ]; then
  echo "::add-mask::$DATABASE_URL"
  # host:port/name only: never the user, the password or the query string.
  rest=${DATABASE_URL#*://}
  rest=${rest##*@}
  rest=${rest%%\?*}
  hostport=${rest%%/*}
  name=${rest#"$hostport"}
  name=${name#/}
  case "$hostport" in
    \[*\]:*|*:*[0-9]) ;;
    *) hostport="$hostport:5432" ;;
  esac
  if [ -z "$name" ] || [ "$hostport" = ":5432" ] || [ "$rest" = "$DATABASE_URL" ]; then
    fail "the $DATABASE_SECRET secret for environment $ENVIRONMENT is not a postgres://USER:PASSWORD@HOST:PORT/DATABASE URL"
  fi
  database="$hostport/$name"
elif [ "$REQUIRE_DATABASE" = true ]; then
  fail "no database URL for environment $ENVIRONMENT: the secret $DATABASE_SECRET is empty or not set. Set it (one secret per environment; nothing falls back to another environment's URL)"
fi

if [ -n "$EXPECTED_DATABASE" ] && [ "$database" != "$EXPECTED_DATABASE" ]; then
  fail "this job resolved the database $database, but the first job of this run resolved $EXPECTED_DATABASE. A GitHub environment secret with the same name overrides the secret the caller passed in jobs that name the environment: keep one source per secret (delete the environment secret, or stop passing the repository one)"
fi

echo "database=$database" >> "$GITHUB_OUTPUT"
echo "call checked: environment $ENVIRONMENT${database:+, database $database}${LIFELINE_REF:+, Lifeline $LIFELINE_REF}"
