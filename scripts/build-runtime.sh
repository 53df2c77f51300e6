#!/bin/sh
# Lays down keyplane's runtime tree in DEST: the compiled build, migrations, example config and
# production dependencies only (no TypeScript toolchain, no tsx, no embedded Postgres binaries).
# The one recipe behind compose/Dockerfile's last stage and systemd/install.sh.
#   usage: sh scripts/build-runtime.sh DEST      (run from a checkout with dev dependencies installed)
set -eu
DEST=${1:?usage: build-runtime.sh DEST}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -f dist/cli.js ] && [ -z "$(find src sql -newer dist/cli.js -print -quit)" ] || npm run -s build
mkdir -p "$DEST"
rm -rf "$DEST/dist" "$DEST/bin" "$DEST/sql" "$DEST/config"
cp -R dist bin sql config package.json package-lock.json "$DEST/"
cd "$DEST"
npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund >&2
