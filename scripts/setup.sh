#!/usr/bin/env bash
# Installs what Lifeline's demo and tests need and is missing: npm dependencies and, as root on
# Debian, the real services (PostgreSQL, Redis, pgBackRest, shellcheck, nginx, Docker, a registry).
# Idempotent: a machine that has everything installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages, each named by a command (or file) that proves it is installed.
declare -A NEED=(
  [postgresql]=/usr/lib/postgresql/*/bin/initdb
  [postgresql-contrib]=/usr/share/postgresql/*/extension/amcheck.control
  [redis-server]=redis-server
  [redis-tools]=redis-check-rdb
  [pgbackrest]=pgbackrest
  [shellcheck]=shellcheck
  [nginx]=nginx
  [docker.io]=dockerd
  [docker-compose]=docker-compose
  [docker-registry]=docker-registry
  [busybox-static]=/bin/busybox
  [time]=/usr/bin/time
  [age]=age-keygen
  [prometheus]=promtool
)
missing=()
for pkg in "${!NEED[@]}"; do
  probe=${NEED[$pkg]}
  if [[ $probe == /* ]]; then
    # shellcheck disable=SC2086
    compgen -G "$probe" >/dev/null || missing+=("$pkg")
  else
    command -v "$probe" >/dev/null 2>&1 || [ -x "/usr/sbin/$probe" ] || [ -x "/usr/bin/$probe" ] || missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing Debian packages: ${missing[*]}"
    log "install them (as root: apt-get install ${missing[*]}) and run again"
    exit 2
  fi
fi

# npm dependencies: install when absent or older than the lockfile.
if [ ! -d node_modules ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# The actions run on node24; the npm package `node` provides it when the system Node is older.
NODE24="$PWD/node_modules/.bin/node"
if ! "$NODE24" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 24 ? 0 : 1)' 2>/dev/null; then
  log "node_modules/.bin/node is not Node 24; reinstalling the node package"
  npm rebuild node >&2
fi
