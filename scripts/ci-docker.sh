#!/bin/sh
# For CI and the README's test command: installs Debian's docker.io, busybox-static and python3-yaml when missing, then starts the engine
# (scripts/dockerd.sh). Prints the DOCKER_HOST to export; use as: eval "$(scripts/ci-docker.sh)".
set -eu

missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
[ -x /bin/busybox ] || missing="$missing busybox-static"
# Tests load the rendered config.yaml with LiteLLM's own loader (PyYAML).
/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1 || missing="$missing python3-yaml"
if [ -n "$missing" ]; then
  # apt's output goes to stderr so that stdout stays the one export line.
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing; } >&2
fi

exec "$(dirname "$0")/dockerd.sh"
