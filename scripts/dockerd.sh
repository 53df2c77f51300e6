#!/bin/sh
# Starts a Docker engine for keyplane's tests and benchmarks under /tmp/kp-docker (no system
# service, no registry, no bridge), waits until it answers /_ping, and prints the DOCKER_HOST to
# export. Installs nothing (scripts/ci-docker.sh does). Safe to run again: a running engine is reused.
set -eu

ROOT=${KP_DOCKER_ROOT:-/tmp/kp-docker}
SOCK="$ROOT/docker.sock"
HOST="unix://$SOCK"
LOG="$ROOT/dockerd.log"
TIMEOUT_S=${KP_DOCKER_START_TIMEOUT:-60}

ping() {
  curl -fsS --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

if [ -S "$SOCK" ] && ping; then
  echo "export DOCKER_HOST=$HOST"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd.sh: dockerd not found; install Debian's docker.io (scripts/ci-docker.sh does)" >&2
  exit 1
fi

mkdir -p "$ROOT/data" "$ROOT/exec"
# A pid file left by an engine that died would make dockerd refuse to start.
if [ -f "$ROOT/docker.pid" ] && ! kill -0 "$(cat "$ROOT/docker.pid")" 2>/dev/null; then
  rm -f "$ROOT/docker.pid"
fi

if [ ! -f "$ROOT/docker.pid" ]; then
  # setsid: the engine outlives this script and the shell that ran it.
  setsid dockerd --host "$HOST" --data-root "$ROOT/data" \
    --exec-root "$ROOT/exec" --pidfile "$ROOT/docker.pid" --storage-driver=vfs \
    --iptables=false --ip6tables=false --bridge=none >"$LOG" 2>&1 </dev/null &
fi

deadline=$(( $(date +%s) + TIMEOUT_S ))
until ping; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "dockerd.sh: the engine did not answer /_ping on $SOCK within ${TIMEOUT_S}s; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.2
done
echo "export DOCKER_HOST=$HOST"
