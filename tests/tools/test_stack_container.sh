#!/usr/bin/env bash
# tools/stack_container: the stack as ./tools/run brings it up runs a container task.
#
# On the test stack's Kafka and PostgreSQL (./tools/test started them; this test needs
# its TASKBUS_STACK_DIR and ports), `tools/stack up` is run as ./tools/run runs it: it
# must start podman's API service with the local image, generate the config pointing the
# container plugin at it, start taskbusd with that config, and report the container
# executor ready. Then, through the REST API only: a user of group ops creates a task with
# "executor": "container" and the image localhost/taskbus-test:latest, runs it now, and
# the run must end "succeeded" with exit code 0 and the script's output in its log.
# Before that, the same `up` with TASKBUS_PODMAN=0 must report the container executor
# not ready (the report is read from the daemon's log, not assumed), with the same
# config path and so the same node name.
# Needs root and podman (apt-get install podman runc uidmap busybox-static): without them
# it fails, it does not skip. Leaves Kafka and PostgreSQL running; stops the taskbusd and
# the podman service it started.
set -euo pipefail
S=${TB_SOURCE_DIR:?TB_SOURCE_DIR: the source tree (set by ctest)}
: "${TASKBUS_STACK_DIR:?TASKBUS_STACK_DIR: run under ./tools/test (the test stack)}"
: "${TASKBUS_KAFKA_PORT:?run under ./tools/test}" "${TASKBUS_PG_PORT:?run under ./tools/test}"
: "${TASKBUS_API_PORT:?run under ./tools/test}"
[[ $(id -u) -eq 0 ]] || { echo "FAIL needs root (podman's API service is started as root)"; exit 1; }
command -v podman >/dev/null || { echo "FAIL podman is missing: apt-get install podman runc uidmap busybox-static"; exit 1; }
unset TASKBUS_CONFIG  # the shipped config, as ./tools/run uses
stack=$S/tools/stack
eval "$("$stack" env)"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tb-stackc.XXXXXX")
cleanup() {
  "$stack" taskbusd-down >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
die() { echo "FAIL $*"; exit 1; }

# A taskbusd or podman service left by an earlier run would hide what `up` starts.
"$stack" taskbusd-down >/dev/null
TASKBUS_STACK_DIR=$TASKBUS_STACK_DIR "$S/tools/podman-setup" stop

# ---- without podman: the report says the container executor is not ready --------
TASKBUS_PODMAN=0 "$stack" up >"$tmp/up0.log" 2>&1 || { cat "$tmp/up0.log"; die "tools/stack up (TASKBUS_PODMAN=0) failed"; }
"$stack" executors >"$tmp/ex0.txt" || true
cat "$tmp/ex0.txt"
if grep -qE '^  container +not ready: .*cannot talk to the container engine' "$tmp/ex0.txt" &&
   grep -qE '^ +tools/stack up did not start podman \(TASKBUS_PODMAN=0' "$tmp/ex0.txt"; then
  ok "without podman's service the container executor is reported not ready (from the log)"
else
  bad "without podman's service the report does not say the container executor is not ready"
fi
grep -qE '^  shell +ready' "$tmp/ex0.txt" && ok "shell reported ready" || bad "shell not reported ready"
# taskbusd's node (its static Kafka group membership) hashes the config path: with and
# without podman the stack must run the same path, or the scheduler partitions of the
# previous member would wait for its session timeout after the switch.
member() { tail -c +"$(( $(cat "$TASKBUS_STACK_DIR/taskbusd/log.start") + 1 ))" "$TASKBUS_STACK_DIR/taskbusd/taskbusd.log" |
  sed -n 's/.*scheduler: member \([^ ]*\) of group.*/\1/p' | head -n 1; }
node0=$(member)
"$stack" taskbusd-down >/dev/null

# ---- as ./tools/run: podman's service, the generated config, taskbusd --------------
t0=$(date +%s.%N)
"$stack" up >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log"; die "tools/stack up failed"; }
echo "tools/stack up (Kafka and PostgreSQL already up): $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t0}") s"
sock=$(realpath -m "$TASKBUS_STACK_DIR")/podman/podman.sock
[[ -S $sock ]] && ok "podman's API socket $sock exists" || bad "no podman socket at $sock"
curl -sf --unix-socket "$sock" http://d/_ping >/dev/null && ok "podman answers _ping" || bad "podman does not answer on $sock"
[[ $(cat "$TASKBUS_STACK_DIR/taskbusd/config.path") == "$TASKBUS_STACK_DIR/taskbus.conf" ]] &&
  ok "taskbusd runs with the generated config" || bad "taskbusd does not run with $TASKBUS_STACK_DIR/taskbus.conf"
grep -q "socket = \"$sock\";" "$TASKBUS_STACK_DIR/taskbus.conf" &&
  ok "the generated config points the container plugin at the socket" || bad "generated config lacks socket = \"$sock\""
if "$TASKBUS_BIN/taskbusd" --check-config "$TASKBUS_STACK_DIR/taskbus.conf" >"$tmp/check.log" 2>&1; then
  ok "taskbusd --check-config accepts the generated config"
else
  cat "$tmp/check.log"; bad "taskbusd --check-config refuses the generated config"
fi
"$stack" executors >"$tmp/ex.txt" || true
cat "$tmp/ex.txt"
node=$(member)
[[ -n $node && $node == "$node0" ]] && ok "the same node ($node) with and without podman" ||
  bad "the node changed from '$node0' to '$node' when podman's service came up"
grep -qE "^  container +ready: engine $sock" "$tmp/ex.txt" &&
  ok "the container executor is reported ready" || bad "the container executor is not reported ready"
grep -qE '^  ssh +loaded, but no group can use it: set groups.NAME.ssh_key' "$tmp/ex.txt" &&
  ok "ssh: the report names groups.NAME.ssh_key" || bad "ssh: no hint naming groups.NAME.ssh_key"
grep -q '  container  ready' "$tmp/up.log" && ok "tools/stack up prints the executors" || bad "tools/stack up does not print the executors"

# ---- a container task through the REST API ------------------------------------------
user=stackc$$_$RANDOM
TASKBUS_KEY_FILE=${TASKBUS_KEY_FILE:-$TASKBUS_STACK_DIR/taskbus.key} "$TASKBUS_BIN/taskbus" admin user create "$user" --groups ops \
  >"$tmp/user.txt" 2>"$tmp/user.err" || { cat "$tmp/user.err"; die "taskbus admin user create failed"; }
token=$(sed -n 's/^token: //p' "$tmp/user.txt")
[[ $token == tbk_* ]] || die "no token in: $(cat "$tmp/user.txt")"
H="Authorization: Bearer $token"
api() { curl -s -o "$tmp/body" -w '%{http_code}' -H "$H" -H 'Content-Type: application/json' "$@"; }
jget() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[int(k)] if isinstance(v,list) else v.get(k)
print("" if v is None else v)' "$tmp/body" "$@"; }

marker="hello-from-podman-$$-$RANDOM"
code=$(api -X POST "$TASKBUS_API/v1/tasks" -d "{\"name\": \"stack container $marker\",
  \"security_group\": \"ops\", \"executor\": \"container\",
  \"executor_options\": {\"image\": \"localhost/taskbus-test:latest\"},
  \"script\": \"echo $marker; echo uid=\$(id -u); test -f /bin/busybox\", \"schedule\": {\"cron\": \"0 0 1 1 *\", \"timezone\": \"UTC\"}}")
[[ $code == 201 ]] || die "POST /v1/tasks: $code $(cat "$tmp/body")"
id=$(jget id)
ok "task $id created (executor container, image localhost/taskbus-test:latest, fires yearly: the run is the run-now's)"
t0=$(date +%s.%N)
code=$(api -X POST "$TASKBUS_API/v1/tasks/$id/run")
[[ $code == 202 ]] || die "POST /v1/tasks/$id/run: $code $(cat "$tmp/body")"

run="" status="" deadline=$((SECONDS + 120))
while ((SECONDS < deadline)); do
  code=$(api "$TASKBUS_API/v1/tasks/$id/runs")
  if [[ $code == 200 ]]; then
    run=$(python3 -c 'import json,sys
print(next((r["id"] for r in json.load(open(sys.argv[1]))["runs"] if r["trigger"] == "run_now"), ""))' "$tmp/body" 2>/dev/null || true)
    if [[ -n $run ]]; then
      code=$(api "$TASKBUS_API/v1/runs/$run")
      status=$(jget status)
      case $status in succeeded | failed | timed_out | cancelled | lost | skipped_* | expired) break ;; esac
    fi
  fi
  sleep 0.2
done
elapsed=$(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $t0}")
echo "run $run: $(cat "$tmp/body")"
[[ $status == succeeded ]] && ok "the run ended succeeded ($elapsed s from run-now to the final status)" ||
  bad "the run ended '${status:-(none within 120 s)}', not succeeded"
[[ $(jget exit_code) == 0 ]] && ok "exit code 0" || bad "exit code '$(jget exit_code)'"
[[ $(jget executor) == container ]] && ok "executor container" || bad "executor '$(jget executor)'"
code=$(api "$TASKBUS_API/v1/runs/$run/log")
echo "log: $(cat "$tmp/body")"
grep -qx "$marker" "$tmp/body" && ok "the log holds the script's output" || bad "the log lacks '$marker'"
grep -qx "uid=65534" "$tmp/body" && ok "the container ran as the group's user (uid 65534)" || bad "the container did not run as uid 65534"
api -X DELETE "$TASKBUS_API/v1/tasks/$id" >/dev/null || true

# ---- taskbusd-down stops what up started, and only that ---------------------------
"$stack" taskbusd-down >/dev/null
[[ ! -S $sock ]] && ok "taskbusd-down stopped podman's service" || bad "podman's socket remains after taskbusd-down"
(exec 3<>"/dev/tcp/127.0.0.1/$TASKBUS_KAFKA_PORT") 2>/dev/null && ok "Kafka keeps running" || bad "Kafka was stopped"

echo "$fails failure(s)"
((fails == 0))
