/**
 * The stand-in's command for rollout tests: reads the env file at every start, as our compose
 * file's LiteLLM command does (none before keyplane's first render), and drains on SIGTERM as
 * LiteLLM does: it stops accepting at once and lets the answers in flight finish before it exits.
 * busybox httpd answers each connection in a child of its own; without this, the container's end
 * would kill an answer half sent (the client sees a cut response), which LiteLLM never does.
 */
export const DRAINING_STANDIN_CMD = [
  '/bin/sh',
  '-c',
  `if [ -f /out/litellm.env ]; then set -a; . /out/litellm.env; set +a; fi
/standin.sh &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM
wait "$server"
# The children answering the last requests outlive httpd itself: wait until none is left.
while :; do
  busy=
  for f in /proc/[0-9]*/comm; do read -r n < "$f" && [ "$n" = httpd ] && busy=1; done 2>/dev/null
  [ -z "$busy" ] && exit 0
  sleep 0.02
done`,
];
