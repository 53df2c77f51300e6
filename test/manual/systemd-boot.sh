#!/usr/bin/env bash
# systemd/ under a real systemd: boots this host's own OS as PID 1 of a systemd-nspawn container
# (a throwaway overlay over /, private network), runs systemd/install.sh there with Debian's
# postgresql, and checks keyplane under its hardened unit: the credential, the peer-authenticated
# database, a key rotation reaching a stand-in LiteLLM through litellm-reload.path and then through
# KEYPLANE_RELOAD=command with the polkit rule (and nothing more), the keyplane CLI wrapper, a
# second install, and a clean stop. Not part of npm test: it needs root, overlayfs, Debian's
# postgresql and systemd-nspawn (apt-get install systemd-container) on the host.
#   sudo bash test/manual/systemd-boot.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/keyplane-boot-XXXXXX)
NSPAWN_PID=
FAILED=0

cleanup() {
  if [ -n "$NSPAWN_PID" ]; then
    kill "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  umount "$WORK/root" 2>/dev/null || true
  umount "$WORK/layer" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; FAILED=1; }
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
# poll SECONDS CMD...: until CMD succeeds, at most SECONDS.
poll() {
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    [ $SECONDS -lt $until ] || return 1
    sleep 0.1
  done
}

mkdir -p "$WORK/layer" "$WORK/root"
mount -t tmpfs -o size=4g tmpfs "$WORK/layer"
mkdir -p "$WORK/layer/upper" "$WORK/layer/work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$WORK/layer/upper,workdir=$WORK/layer/work" "$WORK/root"
masks=()
for u in docker.service docker.socket containerd.service getty@tty1.service apt-daily.timer apt-daily-upgrade.timer \
  man-db.timer e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do masks+=("systemd.mask=$u"); done
systemd-nspawn -D "$WORK/root" --register=no --keep-unit --private-network --bind-ro="$REPO" \
  --console=pipe -b "${masks[@]}" </dev/null >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
leader() { pgrep -P "$NSPAWN_PID" -x systemd | head -n 1; }
poll 30 leader >/dev/null || { cat "$WORK/console.log"; echo "the container did not boot"; exit 1; }
LEADER=$(leader)
inside() { nsenter -t "$LEADER" -a "$@"; }
booted() {
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  [ "$state" = running ] || [ "$state" = degraded ]
}
poll 120 booted || { cat "$WORK/console.log"; echo "the container did not finish booting ($state)"; exit 1; }
echo "container booted ($state); systemd $(inside systemctl --version | head -n 1 | cut -d' ' -f2)"

echo "--- install.sh (fresh host)"
inside env npm_config_offline=true sh -c "cd '$REPO' && sh systemd/install.sh" >"$WORK/install1.log" 2>&1 ||
  { cat "$WORK/install1.log"; exit 1; }
if ! grep -rqs CREDENTIALS_DIRECTORY "$WORK/root/opt/keyplane/dist/crypto/"; then
  echo "note  this build does not read \$CREDENTIALS_DIRECTORY yet: a drop-in points KEYPLANE_MASTER_KEY_FILE at it"
  inside sh -c 'mkdir -p /etc/systemd/system/keyplane.service.d && printf "[Service]\nEnvironment=KEYPLANE_MASTER_KEY_FILE=%%d/master_key\n" >/etc/systemd/system/keyplane.service.d/credential.conf && systemctl daemon-reload && systemctl restart keyplane'
fi
TOKEN=$(sed -n 's/^KEYPLANE_ADMIN_TOKEN=//p' "$WORK/root/etc/keyplane/keyplane.env")
api() { inside curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
ready() { inside curl -sf http://127.0.0.1:4100/readyz >/dev/null; }
check "keyplane.service is ready on Debian's postgresql (peer authentication over the socket)" poll 30 ready
pid=$(inside systemctl show -p MainPID --value keyplane)
status=$(inside cat "/proc/$pid/status")
confined() { grep -qE '^CapEff:\s+0+$' <<<"$status" && grep -qE '^NoNewPrivs:\s+1$' <<<"$status" && grep -qE '^Seccomp:\s+2$' <<<"$status"; }
check "keyplane runs with no capabilities, no new privileges, a seccomp filter" confined
as_keyplane() { nsenter -t "$LEADER" -a setpriv --reuid=keyplane --regid=keyplane --clear-groups --no-new-privs "$@" >/dev/null 2>&1; }
if as_keyplane cat /etc/keyplane/master.key; then fail "the keyplane user can read /etc/keyplane/master.key"; else ok "the keyplane user cannot read /etc/keyplane/master.key"; fi
check "the master key reached keyplane as a credential" inside test -s /run/credentials/keyplane.service/master_key

echo "--- litellm-reload.path (KEYPLANE_RELOAD=none)"
inside sh -c 'mkdir -p /opt/litellm/venv/bin && cat >/opt/litellm/venv/bin/litellm' <<'EOF'
#!/usr/bin/node
// Stand-in for LiteLLM: reads its config as LiteLLM would, logs a hash of the key it was started with.
const fs = require('node:fs');
const crypto = require('node:crypto');
const cfg = fs.readFileSync(process.argv[process.argv.indexOf('--config') + 1], 'utf8');
const key = crypto.createHash('sha256').update(process.env.OPENROUTER_API_KEY ?? '').digest('hex').slice(0, 12);
console.log(`stand-in litellm: config ${cfg.length} bytes, key ${key}`);
require('node:http').createServer((_, res) => res.end('"I\'m alive!"')).listen(4000, '127.0.0.1');
EOF
inside chmod 755 /opt/litellm/venv/bin/litellm
inside systemctl enable --quiet --now litellm.service
sha() { printf %s "$1" | sha256sum | cut -c1-12; }
serves() { inside journalctl -u litellm -o cat --no-pager | grep -q "key $(sha "$1")"; }
KEY1=sk-or-v1-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
api -X PUT -d "{\"api_key\":\"$KEY1\"}" http://127.0.0.1:4100/api/v1/admin/platform-keys/openrouter >/dev/null
check "a rotated key is served by LiteLLM, restarted by the path unit (as its litellm user, via its group)" poll 20 serves "$KEY1"

echo "--- KEYPLANE_RELOAD=command with the polkit rule"
inside sed -i 's/^KEYPLANE_RELOAD=none/KEYPLANE_RELOAD=command/; s/^#KEYPLANE_RELOAD_COMMAND=/KEYPLANE_RELOAD_COMMAND=/' /etc/keyplane/keyplane.env
key_before=$(md5sum <"$WORK/root/etc/keyplane/master.key")
inside env npm_config_offline=true sh -c "cd '$REPO' && sh systemd/install.sh" >"$WORK/install2.log" 2>&1 ||
  { cat "$WORK/install2.log"; exit 1; }
check "a second install keeps the master key" test "$key_before" = "$(md5sum <"$WORK/root/etc/keyplane/master.key")"
check "command mode: the path unit is disabled" test "$(inside systemctl is-enabled litellm-reload.path || true)" = disabled
poll 30 ready || fail "keyplane is back after the second install"
KEY2=sk-or-v1-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
api -X PUT -d "{\"api_key\":\"$KEY2\"}" http://127.0.0.1:4100/api/v1/admin/platform-keys/openrouter >/dev/null
reload_ok() {
  api http://127.0.0.1:4100/api/v1/admin/sync |
    node -e 'const d = JSON.parse(require("fs").readFileSync(0, "utf8")); const last = d.last_reload?.last; process.exit(last?.reloader === "command" && last.status === "ok" ? 0 : 1)'
}
check "keyplane restarted LiteLLM itself (systemctl try-restart via polkit) and recorded the reload ok" poll 30 reload_ok
check "LiteLLM serves the key rotated in command mode" poll 20 serves "$KEY2"
for verb in "stop litellm.service" "restart litellm.service" "try-restart postgresql.service"; do
  # shellcheck disable=SC2086 # verb and unit
  if as_keyplane systemctl --no-ask-password $verb; then fail "the keyplane user may $verb"; else ok "the keyplane user may not $verb"; fi
done

echo "--- the keyplane command (sudo keyplane ...)"
if [ -e "$WORK/root/etc/systemd/system/keyplane.service.d/credential.conf" ]; then
  inside sed -i 's|--property=UMask=0077|--property=UMask=0077 --unit=keyplane-cli-check --setenv=KEYPLANE_MASTER_KEY_FILE=/run/credentials/keyplane-cli-check.service/master_key|' /usr/local/sbin/keyplane
fi
doctor() { inside keyplane doctor >"$WORK/doctor.log" 2>&1 || { cat "$WORK/doctor.log"; return 1; }; }
check "sudo keyplane doctor passes beside the running service" doctor
code=0
inside keyplane no-such-command >/dev/null 2>&1 || code=$?
check "sudo keyplane exits 2 on a usage error" test "$code" = 2

echo "--- start time, memory, stop"
inside systemctl stop keyplane
t0=$(date +%s%N)
inside systemctl start keyplane
poll 30 ready
echo "note  keyplane.service ready $((($(date +%s%N) - t0) / 1000000)) ms after systemctl start"
sleep 10
echo "note  idle RSS $(inside grep VmRSS "/proc/$(inside systemctl show -p MainPID --value keyplane)/status" | awk '{print $2 / 1024 " MB"}')"
inside systemctl stop keyplane
show() { inside systemctl show keyplane -p "$1" --value; }
check "systemctl stop: keyplane exited 0 and nothing of it runs" \
  test "$(show Result) $(show ExecMainStatus) $(show ActiveState)" = "success 0 inactive"

if [ $FAILED != 0 ]; then
  echo "some checks FAILED"
  exit 1
fi
echo "all checks passed"
