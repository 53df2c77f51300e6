#!/bin/sh
# Writes the secret files compose/docker-compose.yml mounts, each only when it is missing, into DIR
# (0700), and gives them to OWNER (0600):
#   master_key          keyplane's keyring (keyplane master-key generate)
#   admin_token         the bootstrap admin bearer token (KEYPLANE_ADMIN_TOKEN_FILE)
#   postgres_password   Postgres's password; letters, digits, - and _, as it goes into a URL as is
# An existing file is never replaced: a new master key cannot decrypt what the old one encrypted, and
# Postgres takes its password only when its volume is first initialised.
#   usage: make-secrets.sh DIR OWNER       (compose: docker compose run --rm init-secrets)
# KEYPLANE_JS names keyplane's bin (default: the image's; tests run the checkout's).
set -eu
DIR=${1:?usage: make-secrets.sh DIR OWNER}
OWNER=${2:?usage: make-secrets.sh DIR OWNER}
KEYPLANE_JS=${KEYPLANE_JS:-/app/bin/keyplane.js}
umask 077
cd "$DIR"

random() {
  node -e 'process.stdout.write(require("crypto").randomBytes(32).toString("base64url") + "\n")'
}

# A file appears whole or not at all: written aside, then renamed.
create() {
  name=$1
  shift
  if [ -s "$name" ]; then
    echo "kept    secrets/$name"
    return
  fi
  "$@" >"$name.new"
  mv "$name.new" "$name"
  echo "created secrets/$name"
}

create master_key node "$KEYPLANE_JS" master-key generate
create admin_token random
create postgres_password random
chown "$OWNER" master_key admin_token postgres_password
chmod 600 master_key admin_token postgres_password
chmod 700 .
