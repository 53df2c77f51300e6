#!/bin/sh
# Installs keyplane as a systemd service from this checkout. Run it again to upgrade: the build and
# the unit files are replaced, the users, the master key and the settings file are kept.
#
#   sudo sh systemd/install.sh               install into this host and (re)start keyplane
#   sh systemd/install.sh --root DIR         lay the files down under DIR only (DESTDIR=DIR alike)
#
# Needs node >= 20 and npm (to lay down the build), and Debian's postgresql on this host unless
# keyplane.env names another database. What goes where:
#   /opt/keyplane                             compiled build + production deps (replaced each run)
#   /usr/local/lib/systemd/system/            keyplane.service, litellm-reload.path/.service, and
#                                             the litellm.service example (unless one exists); for
#                                             two LiteLLMs behind HAProxy (not enabled): litellm@.service
#                                             and litellm-lb.service
#   /usr/local/share/keyplane/haproxy.cfg     litellm-lb.service's config (compose/haproxy.cfg)
#   /usr/local/lib/sysusers.d/keyplane.conf   the keyplane user, and LiteLLM's ($LITELLM_USER)
#   /usr/local/sbin/keyplane                  `sudo keyplane doctor` etc., run the way the service runs
#   /etc/keyplane/                 0750 root:keyplane
#     master.key                   0600 root  generated once, never overwritten: back it up
#     keyplane.env                 0600 root  settings and the admin token, written once, then yours
#     litellm.base.yaml            0640 root:keyplane  your LiteLLM settings, written once
#   /var/lib/keyplane              0711 keyplane  state dir
#   /var/lib/keyplane/litellm      2750 keyplane:<LiteLLM's group>  config.yaml, litellm.env
#   /etc/polkit-1/rules.d/50-keyplane-litellm.rules   only when keyplane.env says KEYPLANE_RELOAD=command
#
# Environment: LITELLM_USER (default litellm) the user LiteLLM runs as, created when missing;
# NODE (default: node on PATH) the node that runs keyplane.
set -eu
umask 022

die() { echo "install.sh: $*" >&2; exit 1; }
note() { echo "  $*"; }

ROOT=${DESTDIR:-}
while [ $# -gt 0 ]; do
  case $1 in
    --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
AS_ROOT=no
[ "$(id -u)" = 0 ] && AS_ROOT=yes
[ -n "$ROOT" ] || [ $AS_ROOT = yes ] || die "installing into this host needs root (or give --root DIR)"
# sd_booted(): systemd is PID 1 here. A throwaway root never talks to it.
SYSTEMD=no
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD=yes

NODE=${NODE:-$(command -v node || true)}
case $NODE in /*) ;; *) die "node not found: install Node.js 20 or newer (apt-get install nodejs), or set NODE=/path/to/node" ;; esac
"$NODE" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "$NODE is Node.js $("$NODE" --version); keyplane needs 20 or newer"
command -v npm >/dev/null 2>&1 || die "npm not found: it lays down keyplane's production dependencies"
[ -f "$SRC/dist/cli.js" ] || [ -x "$SRC/node_modules/.bin/tsc" ] || die "run npm ci in $SRC first: it builds keyplane"
LITELLM_USER=${LITELLM_USER:-litellm}
case $LITELLM_USER in '' | [!a-z_]* | *[!a-z0-9_-]*) die "LITELLM_USER=$LITELLM_USER is not a user name" ;; esac

# The database URL a fresh keyplane.env gets: Debian's postgresql, peer authentication over the socket.
LOCAL_DB_URL='postgresql://keyplane@/keyplane?host=/var/run/postgresql'

# passwd_field NAME FIELD: a field of NAME's passwd entry in the target root ('' when missing).
passwd_field() {
  if [ -z "$ROOT" ]; then
    getent passwd "$1" | cut -d: -f"$2"
  elif [ -f "$ROOT/etc/passwd" ]; then
    awk -F: -v n="$1" -v f="$2" '$1 == n { print $f; exit }' "$ROOT/etc/passwd"
  fi
}
group_name() {
  if [ -z "$ROOT" ]; then
    getent group "$1" | cut -d: -f1
  elif [ -f "$ROOT/etc/group" ]; then
    awk -F: -v g="$1" '$3 == g { print $1; exit }' "$ROOT/etc/group"
  fi
}
# own UID GID PATH...: ownership is set only when running as root (a user's DESTDIR keeps theirs).
own() {
  [ $AS_ROOT = yes ] || return 0
  o="$1:$2"
  shift 2
  chown "$o" "$@"
}
# put MODE UID GID SRC DEST: DEST gets SRC's bytes (atomically, only when they differ), MODE and owner.
put() {
  if ! cmp -s "$4" "$5" 2>/dev/null; then
    cp "$4" "$5.install-tmp"
    chmod "$1" "$5.install-tmp"
    own "$2" "$3" "$5.install-tmp"
    mv -f "$5.install-tmp" "$5"
  fi
  chmod "$1" "$5"
  own "$2" "$3" "$5"
}
# create_once MODE UID GID DEST: DEST gets stdin, unless DEST exists (then it is left as it is).
create_once() {
  if [ -e "$4" ]; then
    cat >/dev/null
    return 1
  fi
  (umask 077 && cat >"$4.install-tmp")
  chmod "$1" "$4.install-tmp"
  own "$2" "$3" "$4.install-tmp"
  # ln refuses to replace an existing file: a key that appeared meanwhile is never overwritten.
  ln "$4.install-tmp" "$4" 2>/dev/null || true
  rm -f "$4.install-tmp"
}
# dir MODE UID GID PATH
dir() {
  mkdir -p "$4"
  chmod "$1" "$4"
  own "$2" "$3" "$4"
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "keyplane: installing into ${ROOT:-/}"

echo "- users"
mkdir -p "$ROOT/usr/local/lib/sysusers.d"
cat >"$TMP/sysusers.conf" <<EOF
# systemd/install.sh: the users keyplane.service and the litellm.service example run as.
u keyplane - "keyplane (LiteLLM keys and config)" /var/lib/keyplane
u $LITELLM_USER - "LiteLLM proxy" /var/lib/litellm
EOF
put 0644 0 0 "$TMP/sysusers.conf" "$ROOT/usr/local/lib/sysusers.d/keyplane.conf"
mkdir -p "$ROOT/etc"
if command -v systemd-sysusers >/dev/null 2>&1; then
  # Creates only the users and groups that are missing.
  systemd-sysusers ${ROOT:+--root="$ROOT"} keyplane.conf
elif [ -z "$ROOT" ]; then
  for u in keyplane "$LITELLM_USER"; do
    [ -n "$(passwd_field "$u" 1)" ] ||
      useradd --system --user-group --home-dir "/var/lib/$u" --no-create-home --shell /usr/sbin/nologin "$u"
  done
else
  note "systemd-sysusers is missing: the users are created on the target by systemd-sysusers at boot"
fi
KP_UID=$(passwd_field keyplane 3)
KP_GID=$(passwd_field keyplane 4)
LL_GID=$(passwd_field "$LITELLM_USER" 4)
if [ -z "$KP_UID" ] || [ -z "$LL_GID" ]; then
  [ $AS_ROOT = no ] || [ -n "$ROOT" ] || die "could not create the users keyplane and $LITELLM_USER"
  # Without the users (a throwaway root without systemd-sysusers) nothing can be owned by them.
  KP_UID=0 KP_GID=0 LL_GID=0
fi

echo "- /opt/keyplane (the compiled build and production dependencies)"
mkdir -p "$ROOT/opt"
rm -rf "$ROOT/opt/keyplane.new" "$ROOT/opt/keyplane.old"
sh "$SRC/scripts/build-runtime.sh" "$ROOT/opt/keyplane.new"
cp "$SRC/README.md" "$ROOT/opt/keyplane.new/"
chmod -R go-w "$ROOT/opt/keyplane.new"
if [ $AS_ROOT = yes ]; then chown -R 0:0 "$ROOT/opt/keyplane.new"; fi
# Swapped in whole: a running keyplane keeps its files until the restart below.
if [ -e "$ROOT/opt/keyplane" ]; then mv "$ROOT/opt/keyplane" "$ROOT/opt/keyplane.old"; fi
mv "$ROOT/opt/keyplane.new" "$ROOT/opt/keyplane"
rm -rf "$ROOT/opt/keyplane.old"

echo "- /etc/keyplane (settings, master key)"
dir 0750 0 "$KP_GID" "$ROOT/etc/keyplane"
if [ -e "$ROOT/etc/keyplane/master.key" ]; then
  note "master key kept: /etc/keyplane/master.key"
else
  # One id:base64 entry of 32 bytes, whatever else the command prints.
  key=$("$NODE" "$ROOT/opt/keyplane/bin/keyplane.js" master-key generate | grep -E '^[A-Za-z0-9_.-]+:[A-Za-z0-9+/]{43}=$' | head -n 1)
  [ -n "$key" ] || die "keyplane master-key generate printed no key"
  printf '%s\n' "$key" | create_once 0600 0 0 "$ROOT/etc/keyplane/master.key" || true
  key=
  note "master key generated: /etc/keyplane/master.key. Back it up somewhere safe: without it no stored key can be decrypted."
fi
token=
[ -e "$ROOT/etc/keyplane/keyplane.env" ] || token=$("$NODE" -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("base64url"))')
if create_once 0600 0 0 "$ROOT/etc/keyplane/keyplane.env" <<EOF; then
# keyplane's settings for keyplane.service: systemd reads this file (as root) at every start.
# install.sh wrote it once and never changes it again. Every setting is described in README.md.
# The master key is not here: it is /etc/keyplane/master.key, handed over as a systemd credential.

# Debian's postgresql on this host, over its Unix socket with peer authentication (no password);
# install.sh creates the role and the database keyplane there.
KEYPLANE_DATABASE_URL=$LOCAL_DB_URL

# The bootstrap admin bearer token. Named tokens: sudo keyplane token create --role admin --name you
KEYPLANE_ADMIN_TOKEN=$token

# How LiteLLM follows a change: none (litellm-reload.path restarts it) or command (keyplane restarts
# it and waits for it to be live; needs the polkit rule install.sh lays down in that mode).
# Run install.sh again after changing it.
KEYPLANE_RELOAD=none
#KEYPLANE_RELOAD=command
#KEYPLANE_RELOAD_COMMAND="systemctl try-restart litellm.service"
KEYPLANE_LITELLM_URL=http://127.0.0.1:4000
# Or two LiteLLMs behind a local HAProxy (litellm@4001, litellm@4002 and litellm-lb; see README.md),
# restarted one at a time, each ready for KEYPLANE_ROLLOUT_SETTLE before the next: no failed request.
#KEYPLANE_RELOAD=command
#KEYPLANE_RELOAD_COMMAND='systemctl restart "\$KEYPLANE_TARGET"'
#KEYPLANE_RELOAD_TARGETS=litellm@4001.service=http://127.0.0.1:4001,litellm@4002.service=http://127.0.0.1:4002
#KEYPLANE_ROLLOUT_SETTLE=5s

# Your own LiteLLM settings, kept under what keyplane manages.
KEYPLANE_BASE_CONFIG=/etc/keyplane/litellm.base.yaml
EOF
  note "settings written: /etc/keyplane/keyplane.env (with a generated KEYPLANE_ADMIN_TOKEN)"
else
  note "settings kept: /etc/keyplane/keyplane.env"
fi
token=
if create_once 0640 0 "$KP_GID" "$ROOT/etc/keyplane/litellm.base.yaml" <"$SRC/config/litellm.base.yaml"; then
  note "LiteLLM base settings written: /etc/keyplane/litellm.base.yaml"
fi
# The last assignment wins, as it does for systemd.
RELOAD=$(sed -n 's/^[[:space:]]*KEYPLANE_RELOAD[[:space:]]*=[[:space:]]*//p' "$ROOT/etc/keyplane/keyplane.env" | tail -n 1 | tr -d "\"' \t\r")
DB_URL=$(sed -n 's/^[[:space:]]*KEYPLANE_DATABASE_URL[[:space:]]*=[[:space:]]*//p' "$ROOT/etc/keyplane/keyplane.env" | tail -n 1 | tr -d "\"' \t\r")

echo "- /var/lib/keyplane (state, and LiteLLM's files readable by group $(group_name "$LL_GID"))"
mkdir -p "$ROOT/var/lib"
dir 0711 "$KP_UID" "$KP_GID" "$ROOT/var/lib/keyplane"
dir 2750 "$KP_UID" "$LL_GID" "$ROOT/var/lib/keyplane/litellm"

echo "- units and the keyplane command"
UNITS="$ROOT/usr/local/lib/systemd/system"
mkdir -p "$UNITS"
sed "s|^ExecStart=/usr/bin/node |ExecStart=$NODE |" "$SRC/systemd/keyplane.service" >"$TMP/keyplane.service"
put 0644 0 0 "$TMP/keyplane.service" "$UNITS/keyplane.service"
put 0644 0 0 "$SRC/systemd/litellm-reload.path" "$UNITS/litellm-reload.path"
put 0644 0 0 "$SRC/systemd/litellm-reload.service" "$UNITS/litellm-reload.service"
# own_unit NAME: where an admin's own NAME is (in /etc or from a package), '' when there is none.
# An admin's own litellm.service or litellm@.service wins; the examples never shadow them.
own_unit() {
  found=
  for d in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    if [ -e "$ROOT$d/$1" ]; then found=$d/$1; fi
  done
  echo "$found"
}
# The LiteLLM examples run as LiteLLM's user; the single one and the template alike.
for unit in litellm.service litellm@.service; do
  own=$(own_unit "$unit")
  if [ -z "$own" ]; then
    sed -e "s|^User=litellm\$|User=$LITELLM_USER|" -e "s|^Group=litellm\$|Group=$(group_name "$LL_GID")|" \
      "$SRC/systemd/$unit" >"$TMP/$unit"
    put 0644 0 0 "$TMP/$unit" "$UNITS/$unit"
  else
    note "$unit: keeping $own (it must read /var/lib/keyplane/litellm, see systemd/$unit)"
  fi
done
OWN_LITELLM=$(own_unit litellm.service)
put 0644 0 0 "$SRC/systemd/litellm-lb.service" "$UNITS/litellm-lb.service"
# The balancer's config is compose's, the one file the tests check; its addresses come from the unit.
mkdir -p "$ROOT/usr/local/share/keyplane"
put 0644 0 0 "$SRC/compose/haproxy.cfg" "$ROOT/usr/local/share/keyplane/haproxy.cfg"
mkdir -p "$ROOT/usr/local/sbin"
cat >"$TMP/keyplane" <<EOF
#!/bin/sh
# keyplane's CLI beside the running service (sudo keyplane doctor | token create | import | render |
# master-key rotate ...), run the way keyplane.service runs: as the keyplane user, with
# /etc/keyplane/keyplane.env and the master key as a credential. Written by systemd/install.sh.
# CAP_DAC_READ_SEARCH: files given to \`import\` are read as root (who runs this) would read them.
set -eu
[ "\$(id -u)" = 0 ] || { echo "keyplane: run it as root: sudo keyplane \$*" >&2; exit 1; }
exec systemd-run --quiet --wait --pipe --collect --service-type=exec \\
  --uid=keyplane --gid=keyplane --working-directory=/opt/keyplane \\
  --setenv=NODE_ENV=production --setenv=KEYPLANE_DATA_DIR=/var/lib/keyplane \\
  --setenv=KEYPLANE_OUTPUT_DIR=/var/lib/keyplane/litellm --setenv=KEYPLANE_LISTEN=127.0.0.1:4100 \\
  --property=EnvironmentFile=/etc/keyplane/keyplane.env \\
  --property=LoadCredential=master_key:/etc/keyplane/master.key \\
  --property=AmbientCapabilities=CAP_DAC_READ_SEARCH \\
  --property=UMask=0077 \\
  $NODE /opt/keyplane/bin/keyplane.js "\$@"
EOF
put 0755 0 0 "$TMP/keyplane" "$ROOT/usr/local/sbin/keyplane"

POLKIT_RULE="$ROOT/etc/polkit-1/rules.d/50-keyplane-litellm.rules"
case $RELOAD in
  command)
    if [ -d "$ROOT/etc/polkit-1/rules.d" ] || [ -n "$ROOT" ]; then
      mkdir -p "$ROOT/etc/polkit-1/rules.d"
      put 0644 0 0 "$SRC/systemd/polkit/50-keyplane-litellm.rules" "$POLKIT_RULE"
      note "KEYPLANE_RELOAD=command: keyplane may try-restart litellm.service and restart litellm@<port>.service ($POLKIT_RULE)"
    else
      note "KEYPLANE_RELOAD=command needs polkit (apt-get install polkitd), then run install.sh again"
    fi
    ;;
  *) rm -f "$POLKIT_RULE" ;;
esac

if [ -z "$ROOT" ] && [ "$DB_URL" = "$LOCAL_DB_URL" ]; then
  echo "- Postgres: role and database keyplane"
  psql_pg() { (cd / && runuser -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 "$@"); }
  if command -v psql >/dev/null 2>&1 && psql_pg -c 'SELECT 1' >/dev/null 2>&1; then
    [ "$(psql_pg -c "SELECT count(*) FROM pg_roles WHERE rolname = 'keyplane'")" = 1 ] || psql_pg -c 'CREATE ROLE keyplane LOGIN'
    [ "$(psql_pg -c "SELECT count(*) FROM pg_database WHERE datname = 'keyplane'")" = 1 ] || psql_pg -c 'CREATE DATABASE keyplane OWNER keyplane'
    DB=ready
  else
    note "no local Postgres answers: apt-get install postgresql, then run install.sh again"
    note "(or set KEYPLANE_DATABASE_URL in /etc/keyplane/keyplane.env to your database)"
    DB=missing
  fi
else
  DB=external
fi

# The path unit restarts LiteLLM only when keyplane does not reload it itself.
ENABLE=keyplane.service
case $RELOAD in '' | none) ENABLE="$ENABLE litellm-reload.path" ;; esac
if [ $SYSTEMD = yes ]; then
  echo "- systemd: enable and (re)start $ENABLE"
  systemctl daemon-reload
  # shellcheck disable=SC2086 # ENABLE is a list of unit names
  systemctl enable --quiet $ENABLE
  case $ENABLE in *litellm-reload.path) ;; *) systemctl disable --quiet --now litellm-reload.path 2>/dev/null || true ;; esac
  if [ "$DB" = missing ]; then
    note "keyplane.service is enabled, not started: start it once its database exists (systemctl start keyplane)"
  else
    # Restart, not start: an upgrade must run the build just laid down.
    # shellcheck disable=SC2086
    systemctl restart $ENABLE
  fi
  note "check: systemctl status keyplane; journalctl -u keyplane; sudo keyplane doctor"
else
  echo "- systemd is not running here${ROOT:+ (files laid down under $ROOT)}; on the target, run:"
  note "systemctl daemon-reload && systemctl enable --now $ENABLE"
fi
if [ -z "$OWN_LITELLM" ] && [ ! -x "$ROOT/opt/litellm/venv/bin/litellm" ]; then
  note "LiteLLM: python3 -m venv /opt/litellm/venv && /opt/litellm/venv/bin/pip install 'litellm[proxy]==1.81.15'"
  note "         then: systemctl enable --now litellm.service"
fi
note "rotation with no failed request: two LiteLLMs behind HAProxy (litellm@.service, litellm-lb.service; see README.md)"
note "admin token: sudo sed -n 's/^KEYPLANE_ADMIN_TOKEN=//p' /etc/keyplane/keyplane.env"
