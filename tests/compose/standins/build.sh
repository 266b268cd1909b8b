#!/usr/bin/env bash
# Everything the compose test needs on this kind of machine (no Docker Hub), installed
# once and cached; reruns only check tags and exit in seconds.
#   1. Debian's Docker engine (docker.io) and debootstrap; dockerd started if not running.
#   2. Docker Compose v$COMPOSE_VERSION built from its Go module (cached binary).
#   3. A Debian base image made with debootstrap.
#   4. Stand-ins built from it and TAGGED AS THE OFFICIAL IMAGES docker-compose.yml names
#      (redis:7, python:3.11-slim, apache/kafka:4.1.1, prom/prometheus:<tag>), so the compose
#      file and Dockerfile run unchanged. An image already under such a tag (the real one, or
#      a stand-in of the same recipe) is kept; a stand-in of an older recipe is rebuilt.
# Test machinery only: users pull the official images. Needs root to install and start dockerd.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CACHE=${PRISM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prism}
COMPOSE_VERSION=5.6.0
KAFKA_VERSION=4.1.1
BASE=prism-standin/debian:bookworm
PROMETHEUS=$(sed -n 's/^ *image: *\(prom\/prometheus:[^ ]*\).*/\1/p' "$ROOT/docker-compose.yml")
say() { printf 'standins: %s\n' "$*" >&2; }

engine() {
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  docker info >/dev/null 2>&1 && return
  say "starting dockerd (log: $CACHE/dockerd.log)"
  mkdir -p "$CACHE"
  nohup dockerd >"$CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
  say "dockerd did not answer within 60 s; see $CACHE/dockerd.log"; exit 1
}

compose() {
  local bin="$CACHE/compose-v$COMPOSE_VERSION/docker-compose"
  local plugin="$HOME/.docker/cli-plugins/docker-compose"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"  # the Go SDK's usual home
    command -v go >/dev/null || { say "Go is needed once to build Docker Compose"; exit 2; }
    say "building Docker Compose v$COMPOSE_VERSION from the Go module proxy (once, ~1.5 min)"
    local src dir
    src=$(mktemp -d)
    export GOPATH="$CACHE/go" GOFLAGS=-modcacherw
    dir=$(go mod download -json "github.com/docker/compose/v5@v$COMPOSE_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$dir/." "$src" && chmod -R u+w "$src"
    mkdir -p "$(dirname "$bin")"
    (cd "$src" && go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=v$COMPOSE_VERSION" -o "$bin.tmp" ./cmd)
    mv "$bin.tmp" "$bin" && rm -rf "$src"
  fi
  mkdir -p "$(dirname "$plugin")"
  cmp -s "$bin" "$plugin" 2>/dev/null || cp "$bin" "$plugin"
  docker compose version >/dev/null
}

# The recipe's hash: a stand-in is rebuilt when its files change.
recipe() { (cd "$HERE/$1" && find . -type f | sort | xargs sha256sum | sha256sum | cut -c1-16); }

have() {  # have TAG [HASH]: the tag exists and is not a stand-in of another recipe
  local label
  label=$(docker image inspect -f '{{index .Config.Labels "prism.standin.recipe"}}' "$1" 2>/dev/null) || return 1
  [ -z "${2:-}" ] || [ "$label" = "<no value>" ] || [ -z "$label" ] || [ "$label" = "$2" ]
}

base() {
  have "$BASE" && return
  say "making the Debian base image with debootstrap (once, ~1 min)"
  local rootfs mirror
  rootfs=$(mktemp -d)
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

standin() {  # standin NAME TAG: build tests/compose/standins/NAME as TAG unless present
  local name=$1 tag=$2 hash ctx
  hash=$(recipe "$name")
  have "$tag" "$hash" && return
  say "building the $tag stand-in (once)"
  ctx=$(mktemp -d)
  cp -r "$HERE/$name/." "$ctx"
  case "$name" in
    python) cp /etc/ssl/certs/ca-certificates.crt "$ctx/" ;;
    kafka) kafka_libs "$ctx/libs" ;;
  esac
  docker build --label "prism.standin.recipe=$hash" -t "$tag" "$ctx" >"$ctx.log" 2>&1 ||
    { cat "$ctx.log" >&2; say "building $tag failed"; exit 1; }
  rm -rf "$ctx" "$ctx.log"
}

kafka_libs() {  # the local stack's cached broker jars + kafka-tools (the healthcheck's tool)
  local libs="$CACHE/kafka-$KAFKA_VERSION/libs"
  if [ ! -f "$libs/.complete" ]; then
    "$ROOT/.venv/bin/python" -c 'from runtime.settings import Settings; from prism.stack.jars import ensure_jars; ensure_jars(Settings())'
  fi
  mkdir -p "$1" && cp "$libs"/*.jar "$1"
  mvn -B -q -f "$HERE/kafka/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DexcludeTransitive=true -DoutputDirectory="$1" -Dkafka.version="$KAFKA_VERSION" >/dev/null
}

engine
compose
base
standin redis redis:7
standin python python:3.11-slim
standin kafka "apache/kafka:$KAFKA_VERSION"
standin prometheus "$PROMETHEUS"
