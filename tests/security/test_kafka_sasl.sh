#!/usr/bin/env bash
# security/kafka_sasl: taskbus on a Kafka that takes clients only over SASL_SSL with
# SCRAM-SHA-512 and denies what no ACL allows (tools/stack secure-up, tools/lib/secure.sh,
# tools/kafka/acls.txt), checked for real:
#   1. a wrong password stops taskbusd at start with an error naming the principal and
#      the broker, and the password appears nowhere in its output;
#   2. taskbus-admin (a super user) migrates and creates the topics;
#   3. two taskbusd processes with their own principals: taskbus-control (api, commands,
#      projector, scheduler, archiver) and taskbus-executor (executor); a task created
#      through REST runs on the shell executor and its output comes back;
#   4. the ACLs: the external principal may produce to task-commands and read
#      task-replies, but is denied producing to task-events and reading runs; the
#      executor's principal is denied producing to task-events; a client without SASL
#      gets nothing.
# Its own broker, on its own ports (TB_SECURE_KAFKA_PORT, default: free ports from
# TASKBUS_KAFKA_PORT + 10) in its own folder; the test stack's PostgreSQL (TASKBUS_PG, a
# database of its own, dropped at the end).
set -euo pipefail
B=${TB_BUILD_DIR:?TB_BUILD_DIR: the build tree (set by ctest)}
S=${TB_SOURCE_DIR:?TB_SOURCE_DIR: the source tree (set by ctest)}
PG=${TASKBUS_PG:?TASKBUS_PG: PostgreSQL of the test stack, set by tools/test}
t_start=$(date +%s)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tb-sasl.XXXXXX")
pids=()
db=tbsec_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
pg_admin=${PG%/*}/postgres
export TASKBUS_STACK_DIR=$tmp/stack
# the daemons and the CLI read everything from the config files written here
unset TASKBUS_PG TASKBUS_KAFKA TASKBUS_CONFIG TASKBUS_API_LISTEN TASKBUS_REGION TASKBUS_KEY_FILE \
      TASKBUS_API TASKBUS_TOKEN TASKBUS_NODE TASKBUS_ROLES

cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$S/tools/stack" secure-down >/dev/null 2>&1 || true
  psql "$pg_admin" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  if ((fails)) || [[ -n ${TBT_KEEP_LOGS:-} ]]; then echo "kept: $tmp"; else rm -rf "$tmp"; fi
}
fails=0
trap cleanup EXIT
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z ${TB_SECURE_KAFKA_PORT:-} ]]; then
  p=$((${TASKBUS_KAFKA_PORT:-19092} + 10))
  while ! port_free "$p" || ! port_free $((p + 1)); do p=$((p + 2)); done
  export TB_SECURE_KAFKA_PORT=$p
fi
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
prefix=taskbus.

# ---- the broker, its principals and ACLs ---------------------------------------
t0=$(date +%s)
"$S/tools/stack" secure-up
echo "secure broker with ACLs up in $(( $(date +%s) - t0 )) s on 127.0.0.1:$TB_SECURE_KAFKA_PORT"
SK=$TASKBUS_STACK_DIR/kafka-secure
secure_pw() { cat "$SK/secrets/$1.password"; }
for u in taskbus-control taskbus-executor taskbus-external; do
  (umask 077; "$S/tools/stack" secure-props "$u" >"$tmp/$u.librdkafka")
done

psql "$pg_admin" -qc "create database $db" >/dev/null
db_url=${PG%/*}/$db
(umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$tmp/taskbus.key"; echo >>"$tmp/taskbus.key")

config() {  # principal [password-file]
  local kafka
  kafka=$("$S/tools/stack" secure-config "$1")
  [[ -n ${2:-} ]] && kafka=$(sed "s|sasl_password_file = \"[^\"]*\"|sasl_password_file = \"$2\"|" <<<"$kafka")
  cat <<CONF
region = "local";
log_level = "info";
topics = { prefix = "$prefix"; partitions = 3; replication = 1; };
postgres = { url = "$db_url"; pool_size = 4; };
api = { listen = "127.0.0.1:$api_port"; pool_size = 4; };
security = { key_file = "$tmp/taskbus.key"; };
executor = { workdir = "$tmp"; lease = "5s"; grace = "5s"; };
groups = { ops = { os_user = "nobody"; }; };
$kafka
CONF
}
for u in taskbus-admin taskbus-control taskbus-executor; do
  (umask 077; config "$u" >"$tmp/${u#taskbus-}.conf")
done

# ---- 1. a wrong password ----------------------------------------------------------
(umask 077; echo "not-the-password-$RANDOM$RANDOM" >"$tmp/wrong.password")
(umask 077; config taskbus-control "$tmp/wrong.password" >"$tmp/wrong.conf")
t0=$(date +%s)
rc=0
timeout 90 "$B/bin/taskbusd" --config "$tmp/wrong.conf" --roles commands >"$tmp/wrong.log" 2>&1 || rc=$?
echo "taskbusd with a wrong password: exit $rc after $(( $(date +%s) - t0 )) s"
check "a wrong password: taskbusd exits non-zero at start, not by timeout (exit $rc)" \
  test "$rc" -ne 0 -a "$rc" -ne 124
check "a wrong password: the error names SASL authentication and the principal" \
  grep -q "SASL authentication of 'taskbus-control' .*failed" "$tmp/wrong.log"
check "a wrong password: the error names the broker 127.0.0.1:$TB_SECURE_KAFKA_PORT" \
  grep -q "127.0.0.1:$TB_SECURE_KAFKA_PORT" "$tmp/wrong.log"
check "a wrong password: it is not in the output" \
  bash -c '! grep -qF "$(cat "$1")" "$2"' _ "$tmp/wrong.password" "$tmp/wrong.log"
grep -m3 -i "sasl\|authenticat" "$tmp/wrong.log" | sed 's/^/    /' || true

# a CA that did not sign the broker's certificate
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/other-ca.key" -out "$tmp/other-ca.crt" -days 1 \
  -subj "/CN=another-ca" >/dev/null 2>&1
(umask 077; config taskbus-control | sed "s|ssl_ca_location = \"[^\"]*\"|ssl_ca_location = \"$tmp/other-ca.crt\"|" >"$tmp/wrongca.conf")
rc=0
timeout 90 "$B/bin/taskbusd" --config "$tmp/wrongca.conf" --roles commands >"$tmp/wrongca.log" 2>&1 || rc=$?
check "a CA that did not sign the broker: taskbusd stops at start with a TLS error naming kafka.ssl_ca_location (exit $rc)" \
  bash -c '[[ $1 -ne 0 && $1 -ne 124 ]] && grep -q "TLS failed: .*check kafka.ssl_ca_location" "$2"' _ "$rc" "$tmp/wrongca.log"
grep -m1 "TLS failed" "$tmp/wrongca.log" | cut -c1-220 | sed 's/^/    /' || true
# a secret inline in a config file others can read: a warning, the secret not in it
config taskbus-control | sed "s|sasl_password_file = \"[^\"]*\"|sasl_password = \"$(secure_pw taskbus-control)\"|" >"$tmp/inline.conf"
chmod 644 "$tmp/inline.conf"
"$B/bin/taskbusd" --check-config "$tmp/inline.conf" >"$tmp/inline.log" 2>&1 || bad "--check-config of a config with sasl_password: $(cat "$tmp/inline.log")"
check "a secret inline in a 0644 config: warning to chmod 600 it, the password not printed" \
  bash -c 'grep -q "holds the secret kafka.sasl_password and has mode 0644: chmod 600" "$1" && ! grep -qF "$2" "$1"' \
  _ "$tmp/inline.log" "$(secure_pw taskbus-control)"
rm -f "$tmp/inline.conf"

# ---- 2. the admin principal: schema and topics ----------------------------------
check "taskbus admin migrate (taskbus-admin)" \
  bash -c '"$1" admin migrate --config "$2" >"$3" 2>&1' _ "$B/bin/taskbus" "$tmp/admin.conf" "$tmp/migrate.log"
check "taskbus admin topics ensure over SASL_SSL (taskbus-admin)" \
  bash -c '"$1" admin topics ensure --config "$2" >"$3" 2>&1' _ "$B/bin/taskbus" "$tmp/admin.conf" "$tmp/topics.log"
check "topics ensure by taskbus-control is denied (no Create ACL)" \
  bash -c '! timeout 60 "$1" admin topics ensure --config "$2" >"$3" 2>&1' _ "$B/bin/taskbus" "$tmp/control.conf" "$tmp/topics-denied.log"

# ---- 3. taskbusd as two principals, a task runs ---------------------------------
# every denial of a taskbusd principal from here to the ACL checks means acls.txt misses a line
denied_roles() { grep -c "Principal = User:taskbus-\(control\|executor\) is Denied" "$SK/kafka.log" || true; }
denied_before=$(denied_roles)
"$B/bin/taskbusd" --config "$tmp/control.conf" --roles api,commands,projector,scheduler,archiver \
  </dev/null >"$tmp/control.log" 2>&1 &
pids+=($!)
"$B/bin/taskbusd" --config "$tmp/executor.conf" --roles executor </dev/null >"$tmp/executor.log" 2>&1 &
pids+=($!)
for ((i = 0; i < 600; i++)); do port_free "$api_port" || break; sleep 0.1; done
check "the api listens on 127.0.0.1:$api_port" test "$i" -lt 600
token=$("$B/bin/taskbus" admin user create tester --groups ops --config "$tmp/admin.conf" 2>"$tmp/user.log" |
        grep -o 'tbk_[A-Za-z0-9_-]*' | head -n1) || true
check "a user with a token" test -n "$token"
export TASKBUS_API=http://127.0.0.1:$api_port TASKBUS_TOKEN=$token
t0=$(date +%s)
task=$("$B/bin/taskbus" tasks create --name sasl-check --group ops --script 'echo hello-over-sasl-ssl' \
        --every 1h --json 2>"$tmp/create.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || true
check "a task created through REST (commands answered over SASL_SSL)" test -n "$task"
"$B/bin/taskbus" tasks run "$task" >"$tmp/run.log" 2>&1 || bad "taskbus tasks run: $(cat "$tmp/run.log")"
status="" run=""
for ((i = 0; i < 120; i++)); do
  if "$B/bin/taskbus" runs list "$task" --json >"$tmp/runs.json" 2>/dev/null; then
    read -r run status < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
rows = d.get("runs", d.get("items", d)) if isinstance(d, dict) else d
done = [r for r in rows if r.get("status") in ("succeeded", "failed", "lost", "timed_out", "cancelled")]
print((done[0]["id"] + " " + done[0]["status"]) if done else "- -")' "$tmp/runs.json") || true
    [[ $status == succeeded || $status == failed || $status == lost ]] && break
  fi
  sleep 0.5
done
echo "task $task: run $run $status after $(( $(date +%s) - t0 )) s"
check "the run succeeded on the executor (its own principal)" test "$status" = succeeded
# the archiver stores the output from run-logs on its own, so it may land a moment after the
# result: --follow waits for it (it ends once the run has ended and all of its output is in)
check "its output came back" \
  bash -c 'timeout 60 "$1" logs "$2" --follow 2>&1 | grep -q hello-over-sasl-ssl' _ "$B/bin/taskbus" "$run"

denied_after=$(denied_roles)
check "the roles were denied nothing (acls.txt covers them: $((denied_after - denied_before)) denials)" \
  test "$denied_after" -eq "$denied_before"
grep "Principal = User:taskbus-\(control\|executor\) is Denied" "$SK/kafka.log" | tail -n +$((denied_before + 1)) |
  sed 's/.*Principal = /    /' | cut -c1-200 | sort | uniq -c | head -5

# ---- 4. the ACLs -------------------------------------------------------------------
kc() {  # principal args...: kcat as principal, output in $tmp/kcat.out
  local u=$1; shift
  timeout 30 kcat -F "$tmp/$u.librdkafka" "$@" >"$tmp/kcat.out" 2>&1
}
check "external: produce to task-commands is allowed" \
  bash -c 'echo "not-avro" | timeout 30 kcat -F "$1" -P -t "$2task-commands" -k sasl-acl-check >"$3" 2>&1 && ! grep -qi "error" "$3"' \
  _ "$tmp/taskbus-external.librdkafka" "$prefix" "$tmp/kcat.out"
check "external: read task-replies is allowed" kc taskbus-external -C -t "${prefix}task-replies" -o beginning -e -q
t0=$(date +%s)
check "external: a signed CREATE on task-commands is ACCEPTED, its reply read (tests/interop/external_producer.py)" \
  bash -c 'TB_KAFKA_PROPS="$1" timeout 120 /usr/bin/python3 "$2/tests/interop/external_producer.py" \
             "127.0.0.1:$3" "$4" "$5" ops tester >"$6" 2>&1' \
  _ "$tmp/taskbus-external.librdkafka" "$S" "$TB_SECURE_KAFKA_PORT" "$prefix" "$token" "$tmp/external.out"
echo "    $(tail -n1 "$tmp/external.out" | cut -c1-160) ($(( $(date +%s) - t0 )) s)"
check "external: produce to task-events is denied (TOPIC_AUTHORIZATION_FAILED)" \
  bash -c '! (echo forged | timeout 30 kcat -F "$1" -P -t "$2task-events" -k x >"$3" 2>&1) || grep -qi "authoriz" "$3"; grep -qi "authoriz" "$3"' \
  _ "$tmp/taskbus-external.librdkafka" "$prefix" "$tmp/kcat.out"
sed 's/^/    /' "$tmp/kcat.out" | head -2
check "external: read runs is denied" \
  bash -c '! timeout 30 kcat -F "$1" -C -t "$2runs" -o beginning -e -q >"$3" 2>&1; grep -qi "authoriz" "$3"' \
  _ "$tmp/taskbus-external.librdkafka" "$prefix" "$tmp/kcat.out"
sed 's/^/    /' "$tmp/kcat.out" | head -2
check "executor principal: produce to task-events is denied" \
  bash -c '(echo forged | timeout 30 kcat -F "$1" -P -t "$2task-events" -k x >"$3" 2>&1) || true; grep -qi "authoriz" "$3"' \
  _ "$tmp/taskbus-executor.librdkafka" "$prefix" "$tmp/kcat.out"
check "a client without SASL gets no metadata" \
  bash -c '! timeout 20 kcat -b "127.0.0.1:$1" -L -m 5 >/dev/null 2>&1' _ "$TB_SECURE_KAFKA_PORT"
check "the broker logged the denials (kafka.authorizer.logger)" \
  grep -q "Principal = User:taskbus-external is Denied" "$SK/kafka.log"

for f in control executor; do
  check "taskbusd ($f) never printed a password" \
    bash -c '! grep -qF -f <(cat "$1"/secrets/*.password) "$2"' _ "$SK" "$tmp/$f.log"
done
check "taskbusd (control) did not stop" kill -0 "${pids[0]}"
check "taskbusd (executor) did not stop" kill -0 "${pids[1]}"

echo "security/kafka_sasl: $(( $(date +%s) - t_start )) s, $fails failure(s)"
((fails == 0))
